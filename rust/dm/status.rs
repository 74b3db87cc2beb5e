// SPDX-License-Identifier: GPL-2.0

//! Status and message output.

use core::fmt;
use core::marker::PhantomData;

use kernel::ffi::{c_char, c_uint};

use crate::bindings;

/// What device-mapper asks a target to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusType {
    /// `dmsetup status`.
    Info,
    /// `dmsetup table`: the table line, as it would be loaded.
    Table,
    /// The record measured by IMA.
    Ima,
}

impl StatusType {
    pub(crate) fn from_raw(t: bindings::status_type_t) -> Option<Self> {
        match t {
            bindings::status_type_t_STATUSTYPE_INFO => Some(Self::Info),
            bindings::status_type_t_STATUSTYPE_TABLE => Some(Self::Table),
            bindings::status_type_t_STATUSTYPE_IMA => Some(Self::Ima),
            _ => None,
        }
    }
}

/// Writes into device-mapper's result buffer like `DMEMIT` does: output that does not fit is
/// cut, and the buffer always stays NUL-terminated.
pub struct StatusWriter<'a> {
    buf: *mut u8,
    len: usize,
    cap: usize,
    _p: PhantomData<&'a mut [u8]>,
}

impl StatusWriter<'_> {
    /// # Safety
    ///
    /// `buf` must be valid for writes of `maxlen` bytes for the writer's lifetime.
    pub(crate) unsafe fn from_raw(buf: *mut c_char, maxlen: c_uint) -> Self {
        let cap = maxlen as usize;
        if cap > 0 {
            // SAFETY: `buf` has room for `maxlen > 0` bytes.
            unsafe { *buf = 0 };
        }
        Self {
            buf: buf.cast(),
            len: 0,
            cap,
            _p: PhantomData,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Write for StatusWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Keep one byte for the terminator.
        let room = self.cap.saturating_sub(self.len + 1);
        let n = s.len().min(room);
        if n > 0 {
            // `s` cannot overlap the buffer, which is device-mapper's own allocation.
            // SAFETY: `len + n < cap`: the copy and the terminator stay inside the buffer.
            unsafe {
                core::ptr::copy_nonoverlapping(s.as_ptr(), self.buf.add(self.len), n);
                *self.buf.add(self.len + n) = 0;
            }
            self.len += n;
        }
        Ok(())
    }
}

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The boundary between dm_rust_test_inline.ko's C glue (rust/test_inline/glue.c) and its Rust
 * code: a RAM disk for the tests that has an inline encryption capability (a blk-crypto profile)
 * and encrypts in software. bindgen reads this header as it reads include/dm_rust.h.
 */
#ifndef DM_RUST_TEST_INLINE_H
#define DM_RUST_TEST_INLINE_H

#include <linux/blkdev.h>
#include <linux/blk-mq.h>
#include <linux/blk-crypto.h>
#include <linux/blk-crypto-profile.h>
#include <linux/highmem.h>
#include <crypto/skcipher.h>

/* The Rust side (rust/test_inline/): keyslot programming and eviction, and the counters. */
int dmrti_keyslot_program(struct blk_crypto_profile *profile, const u8 *key, unsigned int key_size,
			  enum blk_crypto_mode_num mode, unsigned int slot);
int dmrti_keyslot_evict(struct blk_crypto_profile *profile, unsigned int slot);
u64 dmrti_counter(unsigned int which);

/* Module parameter: register no crypto profile (rust/test_inline/glue.c). */
extern bool dmrti_param_no_profile;

/* Initialises a profile with @slots keyslots whose operations are the two functions above. */
int dmrti_profile_init(struct blk_crypto_profile *profile, unsigned int slots);

/*
 * Allocates a disk on @set (queue data @queuedata), registers @profile (if not NULL) on its
 * queue, and adds it as "ramcrypt<index>" of @sectors sectors. Returns an ERR_PTR on failure.
 */
struct gendisk *dmrti_add_disk(struct blk_mq_tag_set *set, void *queuedata,
			       struct blk_crypto_profile *profile, int index, sector_t sectors);
void dmrti_remove_disk(struct gendisk *disk);

/* A request: operation, position, size, inline encryption context. */
enum req_op dmrti_rq_op(struct request *rq);
sector_t dmrti_rq_pos(struct request *rq);
unsigned int dmrti_rq_bytes(struct request *rq);
bool dmrti_rq_crypt(struct request *rq, unsigned int *slot, u64 *dun, unsigned int *data_unit_size);
int dmrti_rq_for_each_segment(struct request *rq,
			      int (*fn)(void *ctx, struct page *page, unsigned int offset, unsigned int len),
			      void *ctx);
void dmrti_memcpy_from_page(void *to, struct page *page, size_t offset, size_t len);
void dmrti_memcpy_to_page(struct page *page, size_t offset, const void *from, size_t len);

/* A synchronous skcipher and its request. */
struct crypto_skcipher *dmrti_alloc_sync_skcipher(const char *name);
void dmrti_free_skcipher(struct crypto_skcipher *tfm);
struct skcipher_request *dmrti_skcipher_request_alloc(struct crypto_skcipher *tfm);
void dmrti_skcipher_request_free(struct skcipher_request *req);
int dmrti_skcipher_crypt_in_place(struct skcipher_request *req, bool encrypt, void *buf,
				  unsigned int len, u8 *iv);

#endif

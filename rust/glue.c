// SPDX-License-Identifier: GPL-2.0
/*
 * dm-rust C glue: the target types, whose callbacks are Rust functions, and one-line wrappers for
 * kernel macros and inline functions that Rust cannot call. No logic lives here.
 */
#include <linux/module.h>
#include "dm_rust.h"

#define DM_RUST_TARGET(t)                                      \
	struct target_type dm_rust_##t##_target = {            \
		.module = THIS_MODULE,                         \
		.ctr = dm_rust_##t##_ctr,                      \
		.dtr = dm_rust_##t##_dtr,                      \
		.map = dm_rust_##t##_map,                      \
		.end_io = dm_rust_##t##_end_io,                \
		.presuspend = dm_rust_##t##_presuspend,        \
		.postsuspend = dm_rust_##t##_postsuspend,      \
		.preresume = dm_rust_##t##_preresume,          \
		.resume = dm_rust_##t##_resume,                \
		.status = dm_rust_##t##_status,                \
		.message = dm_rust_##t##_message,              \
		.iterate_devices = dm_rust_##t##_iterate_devices, \
		.io_hints = dm_rust_##t##_io_hints,            \
	}

DM_RUST_TARGET(linear);
DM_RUST_TARGET(verity);
DM_RUST_TARGET(inlinecrypt);
DM_RUST_TARGET(crypt);
DM_RUST_TARGET(integrity);

/*
 * Module parameters, read-only once loaded. Declared here rather than with the Rust module!
 * macro, whose parameters refuse to be given twice (the load fails with EEXIST), which happens
 * whenever a modprobe command line repeats an option of /etc/modprobe.d; C parameters take the
 * last value, as the kernel's dm-verity parameters do.
 */
bool dm_rust_param_upstream_names;
module_param_named(upstream_names, dm_rust_param_upstream_names, bool, 0444);
MODULE_PARM_DESC(upstream_names, "Register verity, integrity and crypt under the kernel's target names");

bool dm_rust_param_require_signatures;
module_param_named(require_signatures, dm_rust_param_require_signatures, bool, 0444);
MODULE_PARM_DESC(require_signatures, "Verify the roothash of dm-verity hash tree (refuse unsigned tables)");

bool dm_rust_param_keyring_unsealed;
module_param_named(keyring_unsealed, dm_rust_param_keyring_unsealed, bool, 0444);
MODULE_PARM_DESC(keyring_unsealed, "Leave the .dm-verity keyring unsealed");

void dm_rust_bio_set_dev(struct bio *bio, struct block_device *bdev)
{
	bio_set_dev(bio, bdev);
}

enum req_op dm_rust_bio_op(const struct bio *bio)
{
	return bio_op(bio);
}

sector_t dm_rust_bdev_nr_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
}

unsigned int dm_rust_bdev_logical_block_size(struct block_device *bdev)
{
	return bdev_logical_block_size(bdev);
}

/* One INIT_WORK site, hence one lockdep class, per kind of work item. */
void dm_rust_init_io_work(struct work_struct *work, work_func_t func)
{
	INIT_WORK(work, func);
}

void dm_rust_init_taken_work(struct work_struct *work, work_func_t func)
{
	INIT_WORK(work, func);
}

void dm_rust_init_deferred_work(struct work_struct *work, work_func_t func)
{
	INIT_WORK(work, func);
}

void dm_rust_init_map_work(struct work_struct *work, work_func_t func)
{
	INIT_WORK(work, func);
}

unsigned int dm_rust_memalloc_noio_save(void)
{
	return memalloc_noio_save();
}

void dm_rust_memalloc_noio_restore(unsigned int flags)
{
	memalloc_noio_restore(flags);
}

bool dm_rust_queue_work(struct workqueue_struct *wq, struct work_struct *work)
{
	return queue_work(wq, work);
}

struct workqueue_struct *dm_rust_alloc_workqueue(const char *name, unsigned int flags,
						 int max_active)
{
	return alloc_workqueue("%s", flags, max_active, name);
}

unsigned int dm_rust_num_online_cpus(void)
{
	return num_online_cpus();
}

struct bio_vec dm_rust_bio_iter_iovec(struct bio *bio, struct bvec_iter iter)
{
	return bio_iter_iovec(bio, iter);
}

void dm_rust_bio_advance_iter(struct bio *bio, struct bvec_iter *iter, unsigned int bytes)
{
	bio_advance_iter(bio, iter, bytes);
}

struct bio_integrity_payload *dm_rust_bio_integrity(struct bio *bio)
{
	return bio_integrity(bio);
}

/* Takes the payload off a bio that goes down to a device without it (see io.rs `hook`). */
struct bio_integrity_payload *dm_rust_bio_detach_integrity(struct bio *bio)
{
	struct bio_integrity_payload *bip = bio_integrity(bio);

	bio->bi_integrity = NULL;
	bio->bi_opf &= ~REQ_INTEGRITY;
	return bip;
}

/* Puts a detached payload back before the bio completes. */
void dm_rust_bio_attach_integrity(struct bio *bio, struct bio_integrity_payload *bip)
{
	bio->bi_integrity = bip;
	bio->bi_opf |= REQ_INTEGRITY;
}

struct bio_vec dm_rust_bip_iter_bvec(struct bio_integrity_payload *bip, struct bvec_iter iter)
{
	return bvec_iter_bvec(bip->bip_vec, iter);
}

void dm_rust_bip_advance_iter(struct bio_integrity_payload *bip, struct bvec_iter *iter,
			      unsigned int bytes)
{
	bvec_iter_advance(bip->bip_vec, iter, bytes);
}

void *dm_rust_kmap_local_page(struct page *page)
{
	return kmap_local_page(page);
}

void dm_rust_kunmap_local(const void *addr)
{
	kunmap_local(addr);
}

void dm_rust_flush_workqueue(struct workqueue_struct *wq)
{
	flush_workqueue(wq);
}

int dm_rust_crypto_shash_update(struct shash_desc *desc, const u8 *data, unsigned int len)
{
	return crypto_shash_update(desc, data, len);
}

unsigned int dm_rust_crypto_shash_digestsize(struct crypto_shash *tfm)
{
	return crypto_shash_digestsize(tfm);
}

unsigned int dm_rust_crypto_shash_descsize(struct crypto_shash *tfm)
{
	return crypto_shash_descsize(tfm);
}

const char *dm_rust_crypto_shash_alg_name(struct crypto_shash *tfm)
{
	return crypto_shash_alg_name(tfm);
}

void dm_rust_crypto_free_shash(struct crypto_shash *tfm)
{
	crypto_free_shash(tfm);
}

bool dm_rust_crypto_shash_need_key(struct crypto_shash *tfm)
{
	return crypto_shash_get_flags(tfm) & CRYPTO_TFM_NEED_KEY;
}

struct key *dm_rust_request_user_key(const char *description)
{
	return request_key(&key_type_user, description, NULL);
}

const struct user_key_payload *dm_rust_user_key_payload_locked(const struct key *key)
{
	return user_key_payload_locked(key);
}

struct file *dm_rust_get_file(struct file *f)
{
	return get_file(f);
}

int dm_rust_uevent_change(struct dm_target *ti, char **envp)
{
	return kobject_uevent_env(&disk_to_dev(dm_disk(dm_table_get_md(ti->table)))->kobj, KOBJ_CHANGE, envp);
}

struct key *dm_rust_keyring_alloc(const char *description)
{
	return keyring_alloc(description, GLOBAL_ROOT_UID, GLOBAL_ROOT_GID, current_cred(),
			     KEY_POS_SEARCH | KEY_USR_VIEW | KEY_USR_READ | KEY_USR_WRITE |
			     KEY_USR_SEARCH | KEY_USR_SETATTR, KEY_ALLOC_NOT_IN_QUOTA, NULL, NULL);
}

int dm_rust_keyring_seal(struct key *keyring)
{
	return keyring_restrict(make_key_ref(keyring, true), NULL, NULL);
}

bool dm_rust_keyring_sealed_with_keys(const struct key *keyring)
{
	return keyring->keys.nr_leaves_on_tree && keyring->restrict_link;
}

struct key *dm_rust_request_logon_key(const char *description)
{
	return request_key(&key_type_logon, description, NULL);
}

void dm_rust_crypto_free_skcipher(struct crypto_skcipher *tfm)
{
	crypto_free_skcipher(tfm);
}

unsigned int dm_rust_crypto_skcipher_ivsize(struct crypto_skcipher *tfm)
{
	return crypto_skcipher_ivsize(tfm);
}

unsigned int dm_rust_crypto_skcipher_blocksize(struct crypto_skcipher *tfm)
{
	return crypto_skcipher_blocksize(tfm);
}

unsigned int dm_rust_skcipher_request_size(struct crypto_skcipher *tfm)
{
	return sizeof(struct skcipher_request) + crypto_skcipher_reqsize(tfm);
}

void dm_rust_skcipher_request_set_tfm(struct skcipher_request *req, struct crypto_skcipher *tfm)
{
	skcipher_request_set_tfm(req, tfm);
}

void dm_rust_skcipher_request_set_callback(struct skcipher_request *req, u32 flags,
					   crypto_completion_t compl, void *data)
{
	skcipher_request_set_callback(req, flags, compl, data);
}

void dm_rust_skcipher_request_set_crypt(struct skcipher_request *req, struct scatterlist *src,
					struct scatterlist *dst, unsigned int len, void *iv)
{
	skcipher_request_set_crypt(req, src, dst, len, iv);
}

void dm_rust_crypto_init_wait(struct crypto_wait *wait)
{
	crypto_init_wait(wait);
}

int dm_rust_crypto_wait_req(int err, struct crypto_wait *wait)
{
	return crypto_wait_req(err, wait);
}

void dm_rust_sg_set_page(struct scatterlist *sg, struct page *page, unsigned int len,
			 unsigned int offset)
{
	sg_set_page(sg, page, len, offset);
}

mempool_t *dm_rust_mempool_create_page_pool(int min_nr)
{
	return mempool_create_page_pool(min_nr, 0);
}

mempool_t *dm_rust_mempool_create_kmalloc_pool(int min_nr, size_t size)
{
	return mempool_create_kmalloc_pool(min_nr, size);
}

void *dm_rust_mempool_alloc(mempool_t *pool, gfp_t gfp)
{
	return mempool_alloc(pool, gfp);
}

/* Gives every page of a finished clone back to its pool (as dm-crypt's crypt_free_buffer_pages). */
void dm_rust_bio_free_pages(struct bio *bio, mempool_t *pool)
{
	struct bio_vec *bv;
	struct bvec_iter_all iter_all;

	bio_for_each_segment_all(bv, bio, iter_all)
		mempool_free(bv->bv_page, pool);
}

void dm_rust_memzero_explicit(void *s, size_t count)
{
	memzero_explicit(s, count);
}

bool dm_rust_bio_has_data(struct bio *bio)
{
	return bio_has_data(bio);
}

bool dm_rust_bio_has_crypt_ctx(struct bio *bio)
{
	return bio_has_crypt_ctx(bio);
}

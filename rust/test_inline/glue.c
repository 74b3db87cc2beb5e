// SPDX-License-Identifier: GPL-2.0
/*
 * dm_rust_test_inline.ko's C glue: the keyslot operations and module parameters, which forward
 * to Rust, and one-line wrappers for what Rust cannot call (macros, inline functions, a disk
 * allocated with a crypto profile registered before it is added). No logic lives here.
 */
#include <linux/module.h>
#include "dm_rust_test_inline.h"

static int dmrti_ll_keyslot_program(struct blk_crypto_profile *profile,
				    const struct blk_crypto_key *key, unsigned int slot)
{
	return dmrti_keyslot_program(profile, key->bytes, key->size, key->crypto_cfg.crypto_mode, slot);
}

static int dmrti_ll_keyslot_evict(struct blk_crypto_profile *profile,
				  const struct blk_crypto_key *key, unsigned int slot)
{
	return dmrti_keyslot_evict(profile, slot);
}

int dmrti_profile_init(struct blk_crypto_profile *profile, unsigned int slots)
{
	int err = blk_crypto_profile_init(profile, slots);

	if (err)
		return err;
	profile->ll_ops.keyslot_program = dmrti_ll_keyslot_program;
	profile->ll_ops.keyslot_evict = dmrti_ll_keyslot_evict;
	profile->max_dun_bytes_supported = 8;
	profile->key_types_supported = BLK_CRYPTO_KEY_TYPE_RAW;
	profile->modes_supported[BLK_ENCRYPTION_MODE_AES_256_XTS] = 512 | 4096;
	return 0;
}

/* The counters, read-only module parameters whose values come from Rust. */
static int dmrti_counter_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%llu\n", dmrti_counter((unsigned long)kp->arg));
}

static const struct kernel_param_ops dmrti_counter_ops = { .get = dmrti_counter_get };

module_param_cb(units_encrypted, &dmrti_counter_ops, (void *)0, 0444);
MODULE_PARM_DESC(units_encrypted, "Data units this driver encrypted (writes with an encryption context)");
module_param_cb(units_decrypted, &dmrti_counter_ops, (void *)1, 0444);
MODULE_PARM_DESC(units_decrypted, "Data units this driver decrypted (reads with an encryption context)");
module_param_cb(keyslots_programmed, &dmrti_counter_ops, (void *)2, 0444);
MODULE_PARM_DESC(keyslots_programmed, "Keys programmed into a keyslot");
module_param_cb(keyslots_evicted, &dmrti_counter_ops, (void *)3, 0444);
MODULE_PARM_DESC(keyslots_evicted, "Keys evicted from a keyslot");

bool dmrti_param_no_profile;
module_param_named(no_profile, dmrti_param_no_profile, bool, 0444);
MODULE_PARM_DESC(no_profile, "Register no crypto profile (the disks then have no inline encryption)");

static const struct block_device_operations dmrti_fops = {
	.owner = THIS_MODULE,
};

struct gendisk *dmrti_add_disk(struct blk_mq_tag_set *set, void *queuedata,
			       struct blk_crypto_profile *profile, int index, sector_t sectors)
{
	struct queue_limits lim = {
		.logical_block_size = 512,
		.physical_block_size = 4096,
	};
	struct gendisk *disk;
	int err;

	disk = blk_mq_alloc_disk(set, &lim, queuedata);
	if (IS_ERR(disk))
		return disk;
	disk->fops = &dmrti_fops;
	disk->flags |= GENHD_FL_NO_PART;
	snprintf(disk->disk_name, DISK_NAME_LEN, "ramcrypt%d", index);
	set_capacity(disk, sectors);
	if (profile && !blk_crypto_register(profile, disk->queue)) {
		put_disk(disk);
		return ERR_PTR(-EINVAL);
	}
	err = add_disk(disk);
	if (err) {
		put_disk(disk);
		return ERR_PTR(err);
	}
	return disk;
}

void dmrti_remove_disk(struct gendisk *disk)
{
	del_gendisk(disk);
	put_disk(disk);
}

enum req_op dmrti_rq_op(struct request *rq)
{
	return req_op(rq);
}

sector_t dmrti_rq_pos(struct request *rq)
{
	return blk_rq_pos(rq);
}

unsigned int dmrti_rq_bytes(struct request *rq)
{
	return blk_rq_bytes(rq);
}

bool dmrti_rq_crypt(struct request *rq, unsigned int *slot, u64 *dun, unsigned int *data_unit_size)
{
	if (!rq->crypt_ctx || !rq->crypt_keyslot)
		return false;
	*slot = blk_crypto_keyslot_index(rq->crypt_keyslot);
	*dun = rq->crypt_ctx->bc_dun[0];
	*data_unit_size = rq->crypt_ctx->bc_key->crypto_cfg.data_unit_size;
	return true;
}

int dmrti_rq_for_each_segment(struct request *rq,
			      int (*fn)(void *ctx, struct page *page, unsigned int offset, unsigned int len),
			      void *ctx)
{
	struct req_iterator iter;
	struct bio_vec bv;
	int err;

	rq_for_each_segment(bv, rq, iter) {
		err = fn(ctx, bv.bv_page, bv.bv_offset, bv.bv_len);
		if (err)
			return err;
	}
	return 0;
}

void dmrti_memcpy_from_page(void *to, struct page *page, size_t offset, size_t len)
{
	memcpy_from_page(to, page, offset, len);
}

void dmrti_memcpy_to_page(struct page *page, size_t offset, const void *from, size_t len)
{
	memcpy_to_page(page, offset, from, len);
}

/* Synchronous only (CRYPTO_ALG_ASYNC masked): requests are run under a spinlock in queue_rq. */
struct crypto_skcipher *dmrti_alloc_sync_skcipher(const char *name)
{
	return crypto_alloc_skcipher(name, 0, CRYPTO_ALG_ASYNC | CRYPTO_ALG_ALLOCATES_MEMORY);
}

void dmrti_free_skcipher(struct crypto_skcipher *tfm)
{
	crypto_free_skcipher(tfm);
}

struct skcipher_request *dmrti_skcipher_request_alloc(struct crypto_skcipher *tfm)
{
	return skcipher_request_alloc(tfm, GFP_KERNEL);
}

void dmrti_skcipher_request_free(struct skcipher_request *req)
{
	skcipher_request_free(req);
}

int dmrti_skcipher_crypt_in_place(struct skcipher_request *req, bool encrypt, void *buf,
				  unsigned int len, u8 *iv)
{
	struct scatterlist sg;

	sg_init_one(&sg, buf, len);
	skcipher_request_set_callback(req, 0, NULL, NULL);
	skcipher_request_set_crypt(req, &sg, &sg, len, iv);
	return encrypt ? crypto_skcipher_encrypt(req) : crypto_skcipher_decrypt(req);
}

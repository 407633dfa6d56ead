// Package initramfs writes the archives Linux unpacks into its initial root
// file system: the "newc" cpio format (magic 070701), uncompressed.
//
// govmm's boot tests hand the guest kernel a small initramfs. It is written
// uncompressed on purpose: on hosts where guest kernel code is emulated,
// inflating a compressed archive in the guest costs far more than copying a
// few extra megabytes into guest memory. Writing the format directly keeps
// the tests free of any external cpio tool and makes the archive
// reproducible: every entry is owned by root with a modification time of
// zero, and inode numbers are assigned in write order.
//
// The kernel creates entries in archive order and does not create missing
// parent directories, so a Writer refuses an entry whose parent directory it
// has not written yet, and refuses a name written twice. Close appends the
// TRAILER!!! record that ends the archive.
package initramfs

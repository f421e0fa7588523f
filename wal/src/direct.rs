//! A local-directory bucket whose large objects are written with `O_DIRECT`.
//!
//! `object_store`'s `LocalFileSystem` writes an object through the page
//! cache: every byte of every WAL object is copied into a page-cache page
//! that then stays in memory until the kernel needs it back. Ferry already
//! keeps recent data in its own log cache, so that second copy buys nothing
//! but costs a kernel copy per byte into memory that is new (never reused
//! while the bucket grows). On virtual machines whose memory is backed
//! lazily, first touches of memory are slow: on the 2-core VM of
//! `perf/single-node.md` buffered writes of new files ran at 430-510 MB/s
//! against 2.8-5 GB/s with `O_DIRECT`, and the page-cache copy was 78% of
//! the broker's CPU at its peak.
//!
//! [`DirectDirStore`] wraps a `LocalFileSystem` and changes one thing: a
//! whole-object PUT (`PutMode::Overwrite`, no attributes) of at least
//! [`DIRECT_PUT_BYTES_MIN`] bytes is copied, [`BUFFER_BYTES`] at a time,
//! into a page-aligned buffer that the writing thread reuses, the end
//! padded to a multiple of [`ALIGN`], and written with `O_DIRECT` to a staging file named as `LocalFileSystem` names its own
//! (`<object>#<digits>`, which its listings skip), truncated to the object's
//! length and renamed into place. A reader therefore sees either no object
//! or the whole object, as with `LocalFileSystem`. Everything else (small and
//! conditional PUTs, multipart uploads, reads, listings, deletes) is the
//! wrapped store's. Buffered reads of a file written with `O_DIRECT` see its
//! bytes: the kernel keeps the two coherent.
//!
//! A filesystem that refuses `O_DIRECT` (tmpfs does) is detected at the
//! first large PUT, logged once, and from then on every PUT is buffered.

use std::cell::RefCell;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use memmap2::MmapMut;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// The alignment of an `O_DIRECT` write's buffer, offset and length: 4 KiB
/// covers every logical block size in use.
pub const ALIGN: usize = 4096;
/// PUTs smaller than this are left to the page cache: their copy is cheap
/// and metadata objects are small.
pub const DIRECT_PUT_BYTES_MIN: usize = 256 * 1024;
/// The aligned buffer each writing thread keeps: a default WAL object
/// (8 MiB) goes in one write; larger objects in several.
pub const BUFFER_BYTES: usize = 8 << 20;

thread_local! {
    /// The page-aligned buffer this thread writes objects from, reused so
    /// that its pages are touched once.
    static ALIGNED: RefCell<Option<MmapMut>> = const { RefCell::new(None) };
}

/// A local directory as a bucket, large objects written with `O_DIRECT`.
#[derive(Debug)]
pub struct DirectDirStore {
    inner: Arc<LocalFileSystem>,
    /// Cleared once the filesystem has refused `O_DIRECT`.
    direct: AtomicBool,
    direct_puts: AtomicU64,
    /// What writes are padded to: [`ALIGN`], except in the test that makes
    /// the kernel refuse a write.
    align: usize,
}

impl DirectDirStore {
    pub fn new(inner: LocalFileSystem) -> DirectDirStore {
        DirectDirStore {
            inner: Arc::new(inner),
            direct: AtomicBool::new(true),
            direct_puts: AtomicU64::new(0),
            align: ALIGN,
        }
    }

    /// Whether large PUTs still go around the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.load(Ordering::Relaxed)
    }

    /// PUTs written with `O_DIRECT` so far.
    pub fn direct_puts(&self) -> u64 {
        self.direct_puts.load(Ordering::Relaxed)
    }
}

impl fmt::Display for DirectDirStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DirectDirStore({})", self.inner)
    }
}

/// Why a direct write did not happen.
enum DirectError {
    /// The filesystem refuses `O_DIRECT`: buffer this and every later PUT.
    Unsupported(std::io::Error),
    /// Anything else: the PUT fails.
    Failed(&'static str, PathBuf, std::io::Error),
}

fn store_error(op: &'static str, path: &FsPath, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "DirectDirStore",
        source: format!("{op} {}: {e}", path.display()).into(),
    }
}

/// Opens `<dest>#<n>` for the first `n` free, creating the parent folders.
fn open_staging(dest: &FsPath) -> Result<(File, PathBuf), DirectError> {
    let mut n: u64 = 1;
    let mut made_dirs = false;
    loop {
        let mut staging = dest.as_os_str().to_owned();
        staging.push(format!("#{n}"));
        let staging = PathBuf::from(staging);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&staging)
        {
            Ok(f) => return Ok((f, staging)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            Err(e) if e.kind() == ErrorKind::NotFound && !made_dirs => {
                made_dirs = true;
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        DirectError::Failed("create folder", parent.to_path_buf(), e)
                    })?;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // Linux creates the file before it refuses the flag: with
                // `create_new`, the file is this call's to remove.
                let _ = std::fs::remove_file(&staging);
                return Err(DirectError::Unsupported(e));
            }
            Err(e) => return Err(DirectError::Failed("open", staging, e)),
        }
    }
}

/// Copies `payload` through this thread's page-aligned buffer of
/// [`BUFFER_BYTES`] into `file`, a buffer-full at a time, the last write
/// zero-padded to a multiple of `align`. Every write but the last is a
/// whole number of `align` units, so each starts aligned.
fn write_aligned(
    file: &mut File,
    payload: &PutPayload,
    len: usize,
    align: usize,
) -> std::io::Result<()> {
    ALIGNED.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(MmapMut::map_anon(BUFFER_BYTES)?);
        }
        let buf = slot
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no aligned buffer"))?;
        let step = BUFFER_BYTES - BUFFER_BYTES % align;
        let mut filled = 0;
        let mut left = len;
        for part in payload.iter() {
            let mut part: &[u8] = part;
            while !part.is_empty() {
                let take = part.len().min(step - filled);
                buf[filled..filled + take].copy_from_slice(&part[..take]);
                filled += take;
                part = &part[take..];
                if filled == step {
                    write_all_aligned(file, &buf[..step], align)?;
                    left -= step;
                    filled = 0;
                }
            }
        }
        debug_assert_eq!(left, filled);
        if filled > 0 {
            let padded = filled.div_ceil(align) * align;
            buf[filled..padded].fill(0);
            write_all_aligned(file, &buf[..padded], align)?;
        }
        Ok(())
    })
}

/// Writes all of `buf` (a whole number of `align` units, page-aligned) to
/// an `O_DIRECT` file. A short write is continued only where it ended on
/// an `align` boundary; otherwise the next write could not be aligned, and
/// that is an error of its own, not EINVAL (which would read as "no
/// `O_DIRECT` here").
fn write_all_aligned(file: &mut File, buf: &[u8], align: usize) -> std::io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match file.write(&buf[at..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                at += n;
                if at < buf.len() && at % align != 0 {
                    return Err(std::io::Error::other(format!(
                        "a direct write stopped at byte {at}, off the {align}-byte alignment"
                    )));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `payload` to `dest` with `O_DIRECT`, through a staging file.
fn put_direct(dest: &FsPath, payload: &PutPayload, align: usize) -> Result<PutResult, DirectError> {
    let len = payload.content_length();
    let (mut file, staging) = open_staging(dest)?;
    let written = write_aligned(&mut file, payload, len, align)
        .map_err(|e| {
            // A filesystem may accept the flag at open and refuse the write.
            if e.raw_os_error() == Some(libc::EINVAL) {
                DirectError::Unsupported(e)
            } else {
                DirectError::Failed("write", staging.clone(), e)
            }
        })
        .and_then(|()| {
            file.set_len(len as u64)
                .map_err(|e| DirectError::Failed("truncate", staging.clone(), e))
        })
        .and_then(|()| {
            file.metadata()
                .map_err(|e| DirectError::Failed("stat", staging.clone(), e))
        })
        .and_then(|meta| {
            drop(file);
            std::fs::rename(&staging, dest)
                .map(|()| meta)
                .map_err(|e| DirectError::Failed("rename", staging.clone(), e))
        });
    match written {
        Ok(meta) => {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .unwrap_or_default()
                .as_micros();
            Ok(PutResult {
                // The form `LocalFileSystem` gives its e-tags.
                e_tag: Some(format!("\"{:x}-{mtime:x}-{:x}\"", meta.ino(), meta.len())),
                version: None,
                extensions: Default::default(),
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            Err(e)
        }
    }
}

#[async_trait]
impl ObjectStore for DirectDirStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let len = payload.content_length();
        let eligible = self.is_direct()
            && matches!(opts.mode, PutMode::Overwrite)
            && opts.attributes.is_empty()
            && len >= DIRECT_PUT_BYTES_MIN;
        if !eligible {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let dest = self.inner.path_to_filesystem(location)?;
        let task_payload = payload.clone();
        let align = self.align;
        let write = move || put_direct(&dest, &task_payload, align).map_err(|e| (e, dest));
        // Off the runtime's threads when there is one (as LocalFileSystem
        // does); inline otherwise.
        let outcome = match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn_blocking(write)
                .await
                .map_err(|e| object_store::Error::JoinError { source: e })?,
            Err(_) => write(),
        };
        match outcome {
            Ok(put) => {
                self.direct_puts.fetch_add(1, Ordering::Relaxed);
                Ok(put)
            }
            Err((DirectError::Unsupported(e), dest)) => {
                if self.direct.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        dir = %dest.display(), error = %e,
                        "the bucket directory's filesystem refuses O_DIRECT: objects are written through the page cache"
                    );
                }
                self.inner.put_opts(location, payload, opts).await
            }
            Err((DirectError::Failed(op, path, e), _)) => Err(store_error(op, &path, e)),
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;
    use object_store::ObjectStoreExt;

    fn store(dir: &FsPath) -> DirectDirStore {
        DirectDirStore::new(LocalFileSystem::new_with_prefix(dir).unwrap())
    }

    /// Bytes that differ at every position, in several parts.
    fn payload(len: usize) -> (PutPayload, Vec<u8>) {
        let all: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let cut = [0, len / 3, len / 3 + 1, len];
        let parts: Vec<Bytes> = cut
            .windows(2)
            .map(|w| Bytes::copy_from_slice(&all[w[0]..w[1]]))
            .collect();
        (PutPayload::from_iter(parts), all)
    }

    #[tokio::test]
    async fn large_objects_are_written_directly_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        // Unaligned and aligned lengths, one just at the threshold.
        let lens = [
            DIRECT_PUT_BYTES_MIN,
            DIRECT_PUT_BYTES_MIN + 1,
            3 << 20,
            (5 << 20) + 4095,
        ];
        for (i, len) in lens.into_iter().enumerate() {
            let key = Path::from(format!("wal/1/{i:05}"));
            let (p, want) = payload(len);
            s.put(&key, p).await.unwrap();
            let got = s.get(&key).await.unwrap().bytes().await.unwrap();
            assert_eq!(got.len(), len);
            assert!(got == want, "object {i} of {len} B read back different");
            let range = s.get_range(&key, 1000..2000).await.unwrap();
            assert_eq!(&range[..], &want[1000..2000]);
        }
        assert!(
            s.is_direct(),
            "the temp directory's filesystem refused O_DIRECT"
        );
        assert_eq!(s.direct_puts(), lens.len() as u64);
        // No staging file is left, and the listing holds only the objects.
        let listed: Vec<ObjectMeta> = s.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), lens.len());
        let names: Vec<_> = std::fs::read_dir(dir.path().join("wal/1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains('#')), "{names:?}");
    }

    #[tokio::test]
    async fn an_overwrite_replaces_and_small_or_conditional_puts_go_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let key = Path::from("data/t/0/obj");
        let (big, _) = payload(1 << 20);
        s.put(&key, big).await.unwrap();
        let (bigger, want) = payload(2 << 20);
        s.put(&key, bigger).await.unwrap();
        assert!(s.get(&key).await.unwrap().bytes().await.unwrap() == want);
        let before = s.direct_puts();
        s.put(&Path::from("meta/small"), PutPayload::from_static(b"tiny"))
            .await
            .unwrap();
        let (big, _) = payload(1 << 20);
        let created = s
            .put_opts(&Path::from("meta/once"), big, PutMode::Create.into())
            .await;
        assert!(created.is_ok());
        let (again, _) = payload(1 << 20);
        let twice = s
            .put_opts(&Path::from("meta/once"), again, PutMode::Create.into())
            .await;
        assert!(matches!(
            twice,
            Err(object_store::Error::AlreadyExists { .. })
        ));
        assert_eq!(s.direct_puts(), before);
    }

    #[test]
    fn a_put_outside_a_tokio_runtime_is_written_inline() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let key = Path::from("wal/1/00002");
        let (p, want) = payload(1 << 20);
        futures_util::FutureExt::now_or_never(s.put(&key, p))
            .expect("an inline write does not wait")
            .unwrap();
        assert_eq!(s.direct_puts(), 1);
        assert_eq!(std::fs::read(dir.path().join("wal/1/00002")).unwrap(), want);
    }

    #[tokio::test]
    async fn a_filesystem_that_refuses_a_direct_write_gets_it_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(dir.path());
        // A length that no block size divides: the kernel answers EINVAL,
        // as a filesystem without O_DIRECT does.
        s.align = 100;
        let key = Path::from("wal/1/00001");
        let (p, want) = payload((1 << 20) + 1);
        s.put(&key, p).await.unwrap();
        assert!(s.get(&key).await.unwrap().bytes().await.unwrap() == want);
        assert!(!s.is_direct(), "the refused write was not noticed");
        assert_eq!(s.direct_puts(), 0);
        let (p, want) = payload(2 << 20);
        s.put(&key, p).await.unwrap();
        assert!(s.get(&key).await.unwrap().bytes().await.unwrap() == want);
        assert_eq!(s.direct_puts(), 0);
        let listed: Vec<ObjectMeta> = s.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1, "a staging file was left: {listed:?}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("wal/1")).unwrap().count(),
            1
        );
    }
}

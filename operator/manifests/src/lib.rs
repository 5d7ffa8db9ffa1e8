//! A directory of Kubernetes manifests as a live index: what the proxy's standalone mode and the
//! operator's development mode read instead of a cluster.
//!
//! Every `*.yaml`, `*.yml` and `*.json` file directly in the directory is parsed on its own,
//! into one index kept for the life of the directory: a changed file's previous objects are
//! removed from it and its new ones applied, so nothing is copied per change. A file keeps its
//! last good parse: when it stops parsing (a YAML syntax error), the error is logged and its
//! previous objects stay; a deleted file's objects are removed. An object defined in two files
//! is the one read last, and goes when either file drops it. [`follow`] watches the directory
//! (changes batched for a short quiet time) and also re-reads it every two seconds in case an
//! event is lost; only a change in some file's objects is reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use notify::{RecursiveMode, Watcher};
use portico_translate::{Index, Kind, ObjectKey, parse_manifests};

/// Re-read the directory this often even without events.
const RESCAN: Duration = Duration::from_secs(2);
/// Longest a stream of events can postpone a reload.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// Why a directory cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot read the manifests directory {dir}: {source}")]
    Directory {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch the manifests directory: {0}")]
    Watch(#[from] notify::Error),
}

/// Reads `dir` once, calls `on_change` with the result, then follows the directory on a thread
/// of its own: `on_change` gets the directory after every change to some file's objects, and
/// the error when the directory cannot be read (the last good objects stay). Events are batched
/// until `debounce` passes without one (at most a second).
pub fn follow<F>(dir: PathBuf, debounce: Duration, mut on_change: F) -> Result<(), DirError>
where
    F: FnMut(Result<&ManifestDir, std::io::Error>) + Send + 'static,
{
    let shown = dir.display().to_string();
    let directory_error = |source| DirError::Directory {
        dir: shown.clone(),
        source,
    };
    if !dir.is_dir() {
        return Err(directory_error(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not a directory",
        )));
    }
    let mut files = ManifestDir::default();
    files.refresh(&dir).map_err(directory_error)?;
    on_change(Ok(&files));

    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    std::thread::Builder::new()
        .name("portico-manifests".into())
        .spawn(move || {
            // The watcher lives as long as the thread.
            let _watcher = watcher;
            loop {
                match rx.recv_timeout(RESCAN) {
                    Ok(()) => {
                        // Batch a burst of events into one reload.
                        let first = Instant::now();
                        while first.elapsed() < MAX_DEBOUNCE {
                            match rx.recv_timeout(debounce) {
                                Ok(()) => continue,
                                Err(RecvTimeoutError::Timeout) => break,
                                Err(RecvTimeoutError::Disconnected) => return,
                            }
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                match files.refresh(&dir) {
                    Ok(true) => on_change(Ok(&files)),
                    Ok(false) => {}
                    Err(e) => on_change(Err(e)),
                }
            }
        })
        .map_err(directory_error)?;
    Ok(())
}

/// A hash of a file's last seen text (the text itself is not kept: at 10,000 Ingresses it
/// would be megabytes held for a comparison) and the objects of its last good parse.
#[derive(Debug)]
struct File {
    stamp: Stamp,
    digest: u64,
    objects: Keys,
}

/// The kinds and keys of a file's objects, packed: as a list of keys, a file of 10,000
/// objects held 20,000 small strings for the life of the directory.
#[derive(Debug, Default)]
struct Keys {
    /// Namespace and name of each object, back to back.
    text: String,
    /// Kind, namespace length and name length of each object.
    objects: Vec<(Kind, usize, usize)>,
}

impl Keys {
    fn push(&mut self, kind: Kind, key: &ObjectKey) {
        self.text.push_str(&key.namespace);
        self.text.push_str(&key.name);
        self.objects
            .push((kind, key.namespace.len(), key.name.len()));
    }

    fn iter(&self) -> impl Iterator<Item = (Kind, ObjectKey)> + '_ {
        let mut at = 0;
        self.objects.iter().map(move |&(kind, namespace, name)| {
            let key = ObjectKey::new(
                &self.text[at..at + namespace],
                &self.text[at + namespace..at + namespace + name],
            );
            at += namespace + name;
            (kind, key)
        })
    }

    fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// Size and modification time: a file whose stamp did not change is not read again, so the
/// periodic rescan of a large directory costs a `stat` per file, not a read and a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: SystemTime,
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok()?,
        })
    }

    /// A write within the filesystem's timestamp granularity can leave the stamp unchanged, so
    /// a recently modified file is read again until its stamp is old enough to be trusted.
    fn settled(&self) -> bool {
        self.modified.elapsed().is_ok_and(|age| age > SETTLE)
    }
}

/// How old a modification time must be before an unchanged stamp proves an unchanged file.
const SETTLE: Duration = Duration::from_secs(3);

/// A manifests directory's files and the index of their objects.
#[derive(Debug, Default)]
pub struct ManifestDir {
    files: BTreeMap<PathBuf, File>,
    index: Index,
}

/// Identity of a file's contents, to skip re-parsing a file that did not change.
fn digest(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str());
    !hidden && matches!(ext, Some("yaml" | "yml" | "json")) && path.is_file()
}

impl ManifestDir {
    /// The objects of every file's last good parse.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Re-reads `dir`; true when some file's objects changed.
    pub fn refresh(&mut self, dir: &Path) -> std::io::Result<bool> {
        let mut seen = Vec::new();
        let mut changed = false;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if !is_manifest(&path) {
                continue;
            }
            let Some(stamp) = Stamp::of(&path) else {
                continue;
            };
            seen.push(path.clone());
            if let Some(file) = self.files.get(&path)
                && file.stamp == stamp
                && stamp.settled()
            {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let digest = digest(&text);
            if let Some(file) = self.files.get_mut(&path)
                && file.digest == digest
            {
                file.stamp = stamp;
                continue;
            }
            let parsed = parse_manifests(&text, "default");
            let broken =
                parsed.invalid_yaml || (parsed.objects.is_empty() && !parsed.problems.is_empty());
            let name = path.display();
            if broken {
                for p in &parsed.problems {
                    tracing::error!(file = %name, document = p.document, problem = %p.message, "manifest does not parse; keeping its previous contents");
                }
                match self.files.get_mut(&path) {
                    Some(file) => (file.stamp, file.digest) = (stamp, digest),
                    None => {
                        self.files.insert(
                            path,
                            File {
                                stamp,
                                digest,
                                objects: Keys::default(),
                            },
                        );
                    }
                }
                continue;
            }
            for p in &parsed.problems {
                tracing::warn!(file = %name, document = p.document, problem = %p.message, "manifest document skipped");
            }
            self.forget(&path);
            let mut objects = Keys::default();
            for object in &parsed.objects {
                objects.push(object.kind(), &object.key());
            }
            objects.text.shrink_to_fit();
            objects.objects.shrink_to_fit();
            for object in parsed.objects {
                self.index.apply(object);
            }
            self.files.insert(
                path,
                File {
                    stamp,
                    digest,
                    objects,
                },
            );
            changed = true;
        }
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|path| !seen.contains(path))
            .cloned()
            .collect();
        for path in gone {
            changed |= self.forget(&path);
        }
        Ok(changed)
    }

    /// Drops a file and removes its objects from the index; true when it had any.
    fn forget(&mut self, path: &Path) -> bool {
        let Some(file) = self.files.remove(path) else {
            return false;
        };
        for (kind, key) in file.objects.iter() {
            self.index.remove(kind, &key);
        }
        !file.objects.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_file_keeps_its_objects_and_deleted_file_goes() {
        let dir = std::env::temp_dir().join(format!("portico-manifests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("svc.yaml");
        let good = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n";
        std::fs::write(&file, good).unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let mut files = ManifestDir::default();
        assert!(files.refresh(&dir).unwrap());
        assert_eq!(files.index.len(), 1);
        assert!(!files.refresh(&dir).unwrap(), "nothing changed");

        std::fs::write(&file, "kind: [unclosed\n").unwrap();
        assert!(!files.refresh(&dir).unwrap());
        assert_eq!(files.index.len(), 1, "the last good parse stays");

        // A fixed file replaces its previous objects, not adds to them.
        std::fs::write(&file, good.replace("name: web", "name: api")).unwrap();
        assert!(files.refresh(&dir).unwrap());
        let names: Vec<_> = files.index.services.keys().map(|k| k.to_string()).collect();
        assert_eq!(names, ["default/api"]);

        std::fs::remove_file(&file).unwrap();
        assert!(files.refresh(&dir).unwrap());
        assert_eq!(files.index.len(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

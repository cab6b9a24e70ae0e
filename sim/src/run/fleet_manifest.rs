//! The fleet manifest: what `fleetsim provision` made on a shared target
//! server, so that load workers (`fleetsim run --fleet PATH --shard i/n`)
//! drive that one fleet without provisioning it again, and `fleetsim
//! teardown PATH` can remove it.
//!
//! A worker still provisions its own engine from the scenario and the
//! seed (the oracle's truth is written there, as for every run), at the
//! manifest's `provisioned_at`, so its ids, secrets and schedules are the
//! ones the provisioning sent; the manifest then gives it what only the
//! server knows: the server's id for each of the run's ids, each device's
//! secret, the QR/BLE tokens the server signed, the PINs the server
//! generated for guests (through each door's PIN map), and the owner's
//! token. `commands_hash` proves the worker's provisioning is the one the
//! manifest was made from (same scenario, seed and fleetsim rules); a
//! worker whose commands differ refuses to run.
//!
//! The file holds device secrets and an API token: it is created with mode
//! 0600, never overwritten unless asked, and says so in its `secrets` field.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use reference_server::domain::HolderKind;
use reference_server::engine::{Command, Outcome};
use serde::{Deserialize, Serialize};

use super::target::IdKind;
use super::RunError;
pub use crate::report::FleetRef;
use crate::scenario::Scenario;

/// The manifest format this fleetsim writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The `secrets` note every manifest carries.
pub const SECRETS_NOTE: &str = "This file holds every device's secret and an API token of the \
target server's organization owner: protect it like the server's store (mode 0600, never in a \
repository, a log or a report); `fleetsim teardown` removes the fleet it names.";
/// Largest manifest read (about 4 million devices with their codes).
pub const MAX_MANIFEST_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// A fleet provisioned once on a shared server.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetManifest {
    pub format_version: u32,
    /// [`SECRETS_NOTE`].
    pub secrets: String,
    /// The scenario's name, and [`scenario_hash`] of it.
    pub scenario: String,
    pub scenario_hash: String,
    pub seed: u64,
    /// The `now` the fleet was provisioned at (schedules and stays count
    /// from it; workers provision their engines at the same instant).
    pub provisioned_at: Timestamp,
    /// The server's admin and device API (`http://host:port`).
    pub target: String,
    /// `http` or `mqtt`: how the devices reach the server by default.
    pub transport: String,
    /// Over mqtt: the broker the server's gateway is on (`mqtt://host:port`).
    pub broker: Option<String>,
    /// The server's id of the organization provisioning made (teardown
    /// deletes it).
    pub organization: u32,
    /// The owner's user token: workers make their code actions, visitor
    /// keys and remote opens with it; teardown deletes with it.
    pub token: String,
    /// How many provisioning commands were sent, and a hash of them.
    pub commands: u64,
    pub commands_hash: String,
    pub fleet: FleetState,
}

impl std::fmt::Debug for FleetManifest {
    /// Never the token or a device's secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetManifest")
            .field("scenario", &self.scenario)
            .field("seed", &self.seed)
            .field("target", &self.target)
            .field("organization", &self.organization)
            .finish_non_exhaustive()
    }
}

/// A code's holder and doors (the run's ids).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodePlace {
    pub holder: u32,
    pub doors: Vec<u32>,
}

/// A device as the server made it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerDevice {
    /// The server's id.
    pub id: u32,
    /// The secret the server issued (device routes, MQTT password).
    pub secret: String,
}

/// What only the server knows about the fleet, keyed by the run's ids
/// (those a worker's own provisioning gives the same things).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetState {
    /// The server's id of each of the run's, per kind.
    pub ids: BTreeMap<IdKind, BTreeMap<u32, u32>>,
    /// Each holder's kind (a guest's PIN is the server's to generate).
    pub holder_kinds: BTreeMap<u32, HolderKind>,
    /// Each code the run made: its holder and doors.
    pub codes: BTreeMap<u32, CodePlace>,
    /// Each device's door.
    pub device_doors: BTreeMap<u32, u32>,
    /// Per door, the run's PIN text -> the server's where they differ
    /// (guests' PINs the server generated): the truth the oracle judges
    /// PINs by, in the server's words.
    pub pins: BTreeMap<u32, BTreeMap<String, String>>,
    /// Each device's server id and secret.
    pub devices: BTreeMap<u32, ServerDevice>,
    /// Per QR or BLE code, the token the server signed.
    pub tokens: BTreeMap<u32, String>,
    /// Per lock, the server's ids of its fallback pool codes.
    pub pools: BTreeMap<u32, Vec<u32>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} exists already: pass --force to overwrite it (tear its fleet down first with `fleetsim teardown {}`)", .0.display(), .0.display())]
    Exists(PathBuf),
    #[error("{}: not a fleet manifest: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: format version {found}, this fleetsim reads version {FORMAT_VERSION}", path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("{}: {size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have", path.display())]
    TooLarge { path: PathBuf, size: u64 },
}

/// The hash a manifest names its scenario by: the resolved scenario (the
/// file's path and the transport left out: workers may start from another
/// directory, and a fleet serves either transport).
pub fn scenario_hash(s: &Scenario) -> String {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.remove("file");
        m.remove("transport");
    }
    let mut h = blake3::Hasher::new();
    h.update(b"fleetsim scenario");
    h.update(v.to_string().as_bytes());
    h.finalize().to_hex()[..16].to_string()
}

/// A hash of provisioning commands with their outcomes, in order.
pub fn commands_hash(commands: &[(Command, Outcome)]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"fleetsim provisioning");
    for (c, o) in commands {
        h.update(serde_json::to_string(c).unwrap_or_default().as_bytes());
        h.update(format!("{o:?}").as_bytes());
    }
    h.finalize().to_hex()[..16].to_string()
}

impl FleetManifest {
    /// Writes the manifest to `path`, mode 0600; an existing file is an
    /// error unless `force`.
    pub fn write(&self, path: &Path, force: bool) -> Result<(), ManifestError> {
        let io = |source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut open = std::fs::OpenOptions::new();
        open.write(true);
        if force {
            open.create(true).truncate(true);
        } else {
            open.create_new(true);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            open.mode(0o600);
        }
        let file = open.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => ManifestError::Exists(path.to_path_buf()),
            _ => io(e),
        })?;
        // An overwritten file keeps its old mode: make it 0600 too.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        let mut w = std::io::BufWriter::new(file);
        serde_json::to_writer_pretty(&mut w, self).map_err(|e| io(e.into()))?;
        w.write_all(b"\n").map_err(io)?;
        w.flush().map_err(io)
    }

    /// Reads a manifest and the hash of its bytes (reports name it by
    /// that, so `merge` can tell one manifest from another).
    pub fn read(path: &Path) -> Result<(FleetManifest, String), ManifestError> {
        let io = |source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                path: path.to_path_buf(),
                size,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        // The version first: a newer format may not parse as this one.
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let json = |source| ManifestError::Json {
            path: path.to_path_buf(),
            source,
        };
        let v: Version = serde_json::from_slice(&bytes).map_err(json)?;
        if v.format_version != FORMAT_VERSION {
            return Err(ManifestError::Version {
                path: path.to_path_buf(),
                found: v.format_version,
            });
        }
        let m: FleetManifest = serde_json::from_slice(&bytes).map_err(json)?;
        let hash = blake3::hash(&bytes).to_hex()[..16].to_string();
        Ok((m, hash))
    }

    /// Why this manifest is not for a run of `s` with `seed` (`None`: it is).
    pub fn mismatch(&self, s: &Scenario, seed: u64) -> Option<String> {
        let hash = scenario_hash(s);
        if self.scenario_hash != hash {
            return Some(format!(
                "the manifest was made for scenario `{}` (hash {}), but this run's scenario `{}` hashes to {hash} \
                 (another file, or other flags such as --duration)",
                self.scenario, self.scenario_hash, s.name
            ));
        }
        if self.seed != seed {
            return Some(format!(
                "the manifest was made with seed {}, but this run uses seed {seed} \
                 (leave --seed out: a --fleet run takes the manifest's)",
                self.seed
            ));
        }
        None
    }
}

/// A run on a fleet provisioned already (`--fleet`): the manifest and
/// how its report names it.
#[derive(Clone, Debug)]
pub struct FleetRun {
    pub manifest: Arc<FleetManifest>,
    pub reference: FleetRef,
}

impl FleetRun {
    /// Reads the manifest at `path` for a run of `s` with `seed`; a
    /// manifest made for another scenario or seed is refused.
    pub fn load(path: &Path, s: &Scenario, seed: u64) -> Result<FleetRun, String> {
        let (m, hash) = FleetManifest::read(path).map_err(|e| e.to_string())?;
        if let Some(why) = m.mismatch(s, seed) {
            return Err(format!("{}: {why}", path.display()));
        }
        Ok(FleetRun {
            reference: FleetRef {
                manifest: path.display().to_string(),
                manifest_hash: hash,
                target: m.target.clone(),
                broker: m.broker.clone(),
                organization: m.organization,
            },
            manifest: Arc::new(m),
        })
    }

    /// Refuses a run whose own provisioning `commands` are not the ones
    /// the manifest's fleet was made by: its ids would name other things.
    pub fn check_commands(&self, commands: &[(Command, Outcome)]) -> Result<(), RunError> {
        let hash = commands_hash(commands);
        let m = &self.manifest;
        if hash == m.commands_hash && commands.len() as u64 == m.commands {
            return Ok(());
        }
        Err(RunError::Fleet(format!(
            "{}: this run provisions {} commands (hash {hash}), the manifest's fleet was made by {} (hash {}): \
             made by another fleetsim version, or for another scenario",
            self.reference.manifest,
            commands.len(),
            m.commands,
            m.commands_hash
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> FleetManifest {
        let mut fleet = FleetState::default();
        fleet.ids.entry(IdKind::Site).or_default().insert(0, 11);
        fleet.devices.insert(
            3,
            ServerDevice {
                id: 40,
                secret: "s3cret".into(),
            },
        );
        fleet
            .pins
            .entry(2)
            .or_default()
            .insert("4812".into(), "7305".into());
        FleetManifest {
            format_version: FORMAT_VERSION,
            secrets: SECRETS_NOTE.into(),
            scenario: "smoke".into(),
            scenario_hash: "abc".into(),
            seed: 7,
            provisioned_at: Timestamp::UNIX_EPOCH,
            target: "http://127.0.0.1:8080".into(),
            transport: "http".into(),
            broker: None,
            organization: 9,
            token: "u1.token".into(),
            commands: 3,
            commands_hash: "def".into(),
            fleet,
        }
    }

    #[test]
    fn a_manifest_round_trips_with_mode_0600_and_is_never_overwritten_unasked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.json");
        let m = manifest();
        m.write(&path, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (back, hash) = FleetManifest::read(&path).unwrap();
        assert!(back.fleet == m.fleet);
        assert_eq!((back.seed, back.organization), (7, 9));
        assert_eq!(hash.len(), 16);
        let e = m.write(&path, false).unwrap_err();
        assert!(matches!(e, ManifestError::Exists(_)), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        // Forced over a file that was world-readable: 0600 again.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            m.write(&path, true).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The Debug form shows neither the token nor a secret.
        let shown = format!("{m:?}");
        assert!(
            !shown.contains("u1.token") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn a_bad_manifest_names_the_file_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.json");
        let e = FleetManifest::read(&path).unwrap_err().to_string();
        assert!(e.contains("fleet.json"), "{e}");
        std::fs::write(&path, "{\"format_version\": 1, \"seed\": 2}").unwrap();
        let e = FleetManifest::read(&path).unwrap_err().to_string();
        assert!(
            e.contains("not a fleet manifest") && e.contains("missing field"),
            "{e}"
        );
        std::fs::write(&path, "{\"format_version\": 99}").unwrap();
        let e = FleetManifest::read(&path).unwrap_err().to_string();
        assert!(e.contains("format version 99"), "{e}");
        std::fs::write(&path, "[1, 2").unwrap();
        let e = FleetManifest::read(&path).unwrap_err().to_string();
        assert!(e.contains("not a fleet manifest"), "{e}");
    }
}

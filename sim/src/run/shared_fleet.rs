//! One fleet on a shared server for several load workers: `fleetsim
//! provision` creates it through the server's admin API (the `--target`
//! path every run takes, [`Target`]) and describes it in a
//! [`FleetManifest`]; workers attach to it (`run --fleet`, see
//! [`super::load`]); `fleetsim teardown` removes it.

use std::path::Path;

use super::fleet_manifest::{self, FleetManifest};
use super::load::{local_engine, provision_local};
use super::provision;
use super::target::Target;
use super::RunError;
use crate::scenario::{self, Scenario, Transport};

/// Where and how to provision.
#[derive(Clone, Debug)]
pub struct ProvisionOptions {
    pub seed: u64,
    /// The server (`http://host:port`).
    pub target: String,
    /// `Http` or `Mqtt`: how workers reach the server by default.
    pub transport: Transport,
    /// Over mqtt: the broker the server's gateway is on.
    pub broker: Option<String>,
}

/// What provisioning made, for the command's output.
#[derive(Debug)]
pub struct Provisioned {
    pub manifest: FleetManifest,
    pub devices: u64,
    pub sites: u32,
}

fn runtime() -> Result<tokio::runtime::Runtime, RunError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Io)
}

/// Provisions `s`'s fleet on the target once and describes it: the
/// commands a run's engine logs, sent through the admin API as `run
/// --target` sends them.
pub fn provision(s: &Scenario, opts: &ProvisionOptions) -> Result<Provisioned, RunError> {
    runtime()?.block_on(async {
        let target = Target::connect(&opts.target, local_engine(opts.seed)).await?;
        let at = provision::start_time(s);
        let (prov, commands) = provision_local(target.engine(), s, opts.seed, at, true)?;
        let commands_hash = fleet_manifest::commands_hash(&commands);
        let count = commands.len() as u64;
        target.provision(commands).await?;
        let (fleet, token) = target.fleet_state();
        let org = target
            .server_id(super::target::IdKind::Organization, prov.fleet.org.0)
            .ok_or_else(|| {
                RunError::TargetUnsupported("the organization has no server id".into())
            })?;
        let token = token.ok_or_else(|| {
            RunError::TargetUnsupported("provisioning left no owner's token".into())
        })?;
        let manifest = FleetManifest {
            format_version: fleet_manifest::FORMAT_VERSION,
            secrets: fleet_manifest::SECRETS_NOTE.to_string(),
            scenario: s.name.clone(),
            scenario_hash: fleet_manifest::scenario_hash(s),
            seed: opts.seed,
            provisioned_at: at,
            target: opts.target.trim_end_matches('/').to_string(),
            transport: scenario::transport_name(opts.transport).to_string(),
            broker: opts.broker.clone(),
            organization: org,
            token,
            commands: count,
            commands_hash,
            fleet,
        };
        Ok(Provisioned {
            devices: s.fleet.device_count(),
            sites: s.fleet.sites,
            manifest,
        })
    })
}

/// What a teardown found.
#[derive(Debug, PartialEq, Eq)]
pub enum TornDown {
    /// The organization and everything in it were deleted.
    Deleted { organization: u32 },
    /// The server has no such organization (any more).
    NothingLeft { organization: u32 },
}

/// Deletes the organization a manifest names, with everything in it
/// (`DELETE /v1/organizations/{org}` as its owner).
pub fn teardown(m: &FleetManifest) -> Result<TornDown, RunError> {
    runtime()?.block_on(async {
        // Only the owner's token is used: the run's engine stays empty.
        let target = Target::attach(m, local_engine(m.seed)).await?;
        match target.delete_organization(m.organization).await? {
            true => Ok(TornDown::Deleted {
                organization: m.organization,
            }),
            false => Ok(TornDown::NothingLeft {
                organization: m.organization,
            }),
        }
    })
}

/// Reads a manifest for teardown (its scenario is not needed).
pub fn read_manifest(path: &Path) -> Result<FleetManifest, String> {
    FleetManifest::read(path)
        .map(|(m, _)| m)
        .map_err(|e| e.to_string())
}

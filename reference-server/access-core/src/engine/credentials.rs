//! Holders, guest stays and credentials: issuing (PIN rules, uniqueness),
//! changing a PIN, revoking, fallback pools, restored uses.

use super::*;

impl Engine {
    /// `CreateHolder`.
    pub(super) fn create_holder(
        &mut self,
        org: OrgId,
        name: &str,
        kind: HolderKind,
        user: Option<UserId>,
        floors: &FloorScope,
    ) -> Result<HolderId, EngineError> {
        check_name("name", name)?;
        get(&self.orgs, "organization", org.0)?;
        if let Some(u) = user {
            get(&self.users, "user", u.0)?;
        }
        self.check_floor_scope(floors)?;
        let id = HolderId(next_id(self.holders.len(), "holder")?);
        self.holders.push(Holder {
            id,
            org,
            name: name.to_owned(),
            kind,
            user,
            disabled: false,
            floors: floors.clone(),
        });
        Ok(id)
    }

    /// `SetHolderDisabled`.
    pub(super) fn set_holder_disabled(
        &mut self,
        holder: HolderId,
        disabled: bool,
    ) -> Result<(), EngineError> {
        let h = self
            .holders
            .get_mut(holder.index())
            .ok_or_else(|| EngineError::not_found("holder", holder.0))?;
        h.disabled = disabled;
        Ok(())
    }

    /// `SetCredentialDisabled`.
    pub(super) fn set_credential_disabled(
        &mut self,
        credential: CredentialId,
        disabled: bool,
    ) -> Result<(), EngineError> {
        let c = self
            .credentials
            .get_mut(credential.index())
            .ok_or_else(|| EngineError::not_found("credential", credential.0))?;
        c.disabled = disabled;
        Ok(())
    }

    /// `CreateStay`.
    pub(super) fn create_stay(
        &mut self,
        holder: HolderId,
        check_in_at: Timestamp,
        check_out_at: Timestamp,
    ) -> Result<StayId, EngineError> {
        let org = get(&self.holders, "holder", holder.0)?.org;
        if check_out_at <= check_in_at {
            return Err(EngineError::invalid(
                "check_out_at",
                "must be after check_in_at",
            ));
        }
        let id = StayId(next_id(self.stays.len(), "stay")?);
        self.stays.push(Stay {
            id,
            org,
            holder,
            check_in_at,
            check_out_at,
            checked_in: false,
            checked_out: false,
        });
        Ok(id)
    }

    /// `CheckIn`.
    pub(super) fn check_in(&mut self, stay: StayId) -> Result<(), EngineError> {
        let s = self
            .stays
            .get_mut(stay.index())
            .ok_or_else(|| EngineError::not_found("stay", stay.0))?;
        if s.checked_out {
            return Err(EngineError::invalid("stay", "already checked out"));
        }
        s.checked_in = true;
        Ok(())
    }

    /// `CheckOut`.
    pub(super) fn check_out(&mut self, stay: StayId) -> Result<(), EngineError> {
        let s = self
            .stays
            .get_mut(stay.index())
            .ok_or_else(|| EngineError::not_found("stay", stay.0))?;
        s.checked_out = true;
        Ok(())
    }

    /// `AssignFallback`.
    pub(super) fn assign_fallback(
        &mut self,
        device: DeviceId,
        holder: HolderId,
        name: &str,
        schedule: &Schedule,
    ) -> Result<CredentialId, EngineError> {
        check_name("name", name)?;
        schedule.check()?;
        // The holder is of the device's organization (`action_for`).
        get(&self.holders, "holder", holder.0)?;
        let entry = &mut self.devices[device.index()];
        let Some(id) = entry.fallback_pool.first().copied() else {
            return Err(EngineError::invalid(
                "device",
                "the fallback pool of this lock is empty",
            ));
        };
        entry.fallback_pool.remove(0);
        let c = &mut self.credentials[id.index()];
        c.holder = holder;
        c.name = name.to_owned();
        c.schedule = schedule.clone();
        c.uses = UseCounter::new(c.doors.len(), schedule.use_limit());
        c.unassigned_fallback = false;
        Ok(id)
    }

    /// `RestoreUse`.
    pub(super) fn restore_use(
        &mut self,
        credential: CredentialId,
        door: DoorId,
    ) -> Result<(), EngineError> {
        let c = get(&self.credentials, "credential", credential.0)?;
        c.uses.restore(c.door_slot(door));
        Ok(())
    }

    pub(super) fn check_floor_scope(&self, floors: &FloorScope) -> Result<(), EngineError> {
        match floors {
            FloorScope::Any => Ok(()),
            FloorScope::Only(fs) => fs
                .iter()
                .try_for_each(|f| get(&self.floors, "floor", f.0).map(|_| ())),
            FloorScope::FollowHolder(h) => get(&self.holders, "holder", h.0).map(|_| ()),
        }
    }

    pub(super) fn pin_policy(&self, site: SiteId) -> PinPolicy {
        let s = &self.sites[site.index()].settings;
        PinPolicy {
            six_digits_enabled: s.six_digit_pins,
            custom_pins_enabled: s.custom_pins,
        }
    }

    /// Is `pin` free on every door (ignoring revoked codes and `except`)?
    pub(super) fn pin_free(
        &self,
        pin: Pin,
        doors: &[DoorId],
        except: Option<CredentialId>,
    ) -> bool {
        doors
            .iter()
            .all(|d| match self.pin_index.get(pin_key(*d, pin)) {
                None => true,
                Some(c) => Some(c) == except || self.credentials[c.index()].revoked,
            })
    }

    pub(super) fn resolve_pin(
        &mut self,
        spec: PinSpec,
        site: SiteId,
        doors: &[DoorId],
        except: Option<CredentialId>,
    ) -> Result<(Pin, Origin), EngineError> {
        let policy = self.pin_policy(site);
        let (pin, origin) = match spec {
            PinSpec::Generate { digits } => {
                let mut rng = std::mem::replace(&mut self.rng, ChaCha8Rng::seed_from_u64(0));
                let r = policy.generate(usize::from(digits), &mut rng, |p| {
                    !self.pin_free(p, doors, except)
                });
                self.rng = rng;
                (r?, Origin::Automatic)
            }
            PinSpec::Custom(text) => {
                let community = doors.iter().any(|d| self.doors[d.index()].common_area);
                (policy.check_custom(&text, community)?, Origin::Manual)
            }
            PinSpec::Manual(text) => {
                let open = PinPolicy {
                    custom_pins_enabled: true,
                    ..policy
                };
                (open.check_custom(&text, false)?, Origin::Manual)
            }
            PinSpec::Resolved { pin, origin } => (pin, origin),
        };
        if !self.pin_free(pin, doors, except) {
            return Err(PinRuleError::InUse.into());
        }
        Ok((pin, origin))
    }

    pub(super) fn issue(
        &mut self,
        mut issue: Issue,
        replaces: Option<CredentialId>,
        now: Timestamp,
    ) -> Result<(CredentialId, Issue), EngineError> {
        let (org, site) = self.check_issue(&mut issue)?;
        let id = CredentialId(next_id(self.credentials.len(), "credential")?);
        let (kind, secret, origin) = match &issue.secret {
            SecretSpec::Pin { pin } => {
                let (pin, origin) = self.resolve_pin(pin.clone(), site, &issue.doors, replaces)?;
                issue.secret = SecretSpec::Pin {
                    pin: PinSpec::Resolved { pin, origin },
                };
                (CredentialKind::Pin, Secret::Pin(pin), origin)
            }
            SecretSpec::Card { number } => {
                if let Some(c) = self.card_index.get(&(site, *number)) {
                    if !self.credentials[c.index()].revoked {
                        return Err(EngineError::invalid(
                            "number",
                            "this card is already in use on the site",
                        ));
                    }
                }
                (CredentialKind::Card, Secret::Card(*number), Origin::Manual)
            }
            SecretSpec::Qr => (
                CredentialKind::Qr,
                Secret::Token { version: 0 },
                Origin::Automatic,
            ),
            SecretSpec::Ble => (
                CredentialKind::Ble,
                Secret::Token { version: 0 },
                Origin::Automatic,
            ),
        };
        match secret {
            Secret::Pin(p) => {
                for d in &issue.doors {
                    self.index_pin(*d, p, id);
                }
            }
            Secret::Card(n) => {
                self.index_card(site, n, id, &issue.doors);
            }
            Secret::Token { .. } => {}
        }
        let mut placements = Placements::new();
        if kind.stored_on_device() {
            for d in &issue.doors {
                for i in 0..self.door_devices[d.index()].len() {
                    let dev = self.door_devices[d.index()][i];
                    if self.devices[dev.index()].device.stores_codes {
                        placements.push(Placement {
                            device: dev,
                            state: SyncState::Pending,
                        });
                        self.bump_sync(dev);
                    }
                }
            }
        }
        for d in &issue.doors {
            self.door_credentials[d.index()].push(id);
        }
        let uses = UseCounter::new(issue.doors.len(), issue.schedule.use_limit());
        crate::huge::push(
            &mut self.credentials,
            Credential {
                id,
                org,
                site,
                holder: issue.holder,
                name: issue.name.clone(),
                kind,
                origin,
                secret,
                schedule: issue.schedule.clone(),
                doors: issue.doors.clone(),
                floors: issue.floors.clone(),
                disabled: false,
                revoked: false,
                unassigned_fallback: false,
                replaces,
                replaced_by: None,
                placements,
                uses,
                created_at: now,
                sole_door: match issue.doors.as_slice() {
                    [d] => *d,
                    _ => DoorId(u32::MAX),
                },
            },
        );
        Ok((id, issue))
    }

    /// Checks an issue against the rules and the state, and completes its
    /// doors (common areas, sorted, no repeats). Answers the holder's
    /// organization and the doors' site.
    fn check_issue(&self, issue: &mut Issue) -> Result<(OrgId, SiteId), EngineError> {
        check_name("name", &issue.name)?;
        issue.schedule.check()?;
        let holder = get(&self.holders, "holder", issue.holder.0)?;
        let org = holder.org;
        // seeds/003: guest codes are randomly generated, not customizable.
        let typed = matches!(
            issue.secret,
            SecretSpec::Pin {
                pin: PinSpec::Custom(_) | PinSpec::Manual(_)
            }
        );
        if typed && holder.kind != HolderKind::Member {
            return Err(PinRuleError::GuestCodeGenerated.into());
        }
        if issue.doors.is_empty() {
            return Err(EngineError::invalid(
                "doors",
                "a credential opens at least one door",
            ));
        }
        if issue.doors.len() > MAX_DOORS_PER_CREDENTIAL {
            return Err(EngineError::invalid(
                "doors",
                format!("at most {MAX_DOORS_PER_CREDENTIAL}"),
            ));
        }
        let site = get(&self.doors, "door", issue.doors[0].0)?.site;
        for d in &issue.doors {
            let door = get(&self.doors, "door", d.0)?;
            if door.site != site {
                return Err(EngineError::invalid(
                    "doors",
                    "all doors of a credential are on one site",
                ));
            }
        }
        // `action_for` answered doors of another organization as unknown.
        debug_assert_eq!(
            self.sites[site.index()].org,
            org,
            "doors of the holder's org"
        );
        if let Schedule::Stay { stay } = issue.schedule {
            let s = get(&self.stays, "stay", stay.0)?;
            if s.holder != issue.holder {
                return Err(EngineError::invalid(
                    "schedule.stay",
                    "the stay belongs to another holder",
                ));
            }
        }
        self.check_floor_scope(&issue.floors)?;
        if issue.include_common_areas {
            for door in &self.doors {
                if door.site == site && door.common_area && !issue.doors.contains(&door.id) {
                    issue.doors.push(door.id);
                }
            }
            issue.include_common_areas = false;
            if issue.doors.len() > MAX_DOORS_PER_CREDENTIAL {
                return Err(EngineError::invalid(
                    "doors",
                    format!("at most {MAX_DOORS_PER_CREDENTIAL} with common areas"),
                ));
            }
        }
        issue.doors.sort_unstable();
        issue.doors.dedup();
        Ok((org, site))
    }

    pub(super) fn change_pin(
        &mut self,
        old: CredentialId,
        pin: PinSpec,
        now: Timestamp,
    ) -> Result<Applied, EngineError> {
        let c = get(&self.credentials, "credential", old.0)?;
        if c.kind != CredentialKind::Pin {
            return Err(EngineError::invalid(
                "credential",
                "only PIN codes can be changed",
            ));
        }
        if c.revoked || c.replaced_by.is_some() {
            return Err(EngineError::invalid(
                "credential",
                "this code is revoked or already replaced",
            ));
        }
        let issue = Issue {
            holder: c.holder,
            name: c.name.clone(),
            secret: SecretSpec::Pin { pin },
            schedule: c.schedule.clone(),
            doors: c.doors.clone(),
            include_common_areas: false,
            floors: c.floors.clone(),
        };
        let (new, resolved) = self.issue(issue, Some(old), now)?;
        let root = self.code_id(old);
        self.code_heads.insert(root, new);
        let old_c = &mut self.credentials[old.index()];
        old_c.replaced_by = Some(new);
        // A code with no device to wait for is replaced at once.
        if old_c.placements.iter().all(|p| !p.state.on_device()) {
            self.retire(old);
        }
        let SecretSpec::Pin { pin } = resolved.secret else {
            unreachable!("issued as a PIN")
        };
        Ok(Applied {
            outcome: Outcome::Credential(new),
            logged: Command::ChangePin {
                credential: old,
                pin,
            },
            sync_changed: Vec::new(),
        })
    }

    /// `RevokeCredential`: the code goes from every lock, and so do its
    /// earlier versions still there (a changed PIN not yet confirmed).
    pub(super) fn revoke(&mut self, id: CredentialId) -> Result<(), EngineError> {
        get(&self.credentials, "credential", id.0)?;
        let mut at = self.credentials[id.index()].replaces;
        while let Some(prev) = at {
            let c = &self.credentials[prev.index()];
            at = c.replaces;
            if c.placements.iter().any(|p| p.state.on_device()) {
                self.revoke_one(prev);
            }
        }
        self.revoke_one(id);
        Ok(())
    }

    fn revoke_one(&mut self, id: CredentialId) {
        let c = &mut self.credentials[id.index()];
        c.revoked = true;
        let mut touched = Vec::new();
        for p in &mut c.placements {
            p.state = match p.state {
                SyncState::Pending | SyncState::Failed(_) | SyncState::Removed => {
                    SyncState::Removed
                }
                SyncState::Setting | SyncState::Set | SyncState::Removing => {
                    touched.push(p.device);
                    SyncState::Removing
                }
            };
        }
        for d in touched {
            self.bump_sync(d);
        }
    }

    /// A replaced or revoked code whose locks no longer hold it: take it out
    /// of the lookup tables.
    pub(super) fn retire(&mut self, id: CredentialId) {
        let c = &mut self.credentials[id.index()];
        c.revoked = true;
        match c.secret {
            Secret::Pin(p) => {
                for d in c.doors.clone() {
                    self.unindex_pin(d, p, id);
                }
            }
            Secret::Card(n) => {
                let site = c.site;
                self.unindex_card(site, n, id);
            }
            Secret::Token { .. } => {}
        }
    }

    pub(super) fn load_fallback_pool(
        &mut self,
        device: DeviceId,
        pins: Vec<PinSpec>,
        now: Timestamp,
    ) -> Result<Applied, EngineError> {
        let dev = get(&self.devices, "device", device.0)?.device.clone();
        if dev.kind != DeviceKind::Lock {
            return Err(EngineError::invalid(
                "device",
                "fallback pools are loaded on locks",
            ));
        }
        if pins.len() > usize::from(dev.code_slots) {
            return Err(EngineError::invalid(
                "pins",
                format!("at most the lock's {} code slots", dev.code_slots),
            ));
        }
        let org = self.sites[dev.site.index()].org;
        let holder = match self.pool_holders.get(&org) {
            Some(h) => *h,
            None => {
                let id = HolderId(next_id(self.holders.len(), "holder")?);
                self.holders.push(Holder {
                    id,
                    org,
                    name: "Fallback pool".into(),
                    kind: HolderKind::Member,
                    user: None,
                    disabled: false,
                    floors: FloorScope::Any,
                });
                self.pool_holders.insert(org, id);
                id
            }
        };
        let mut made = Vec::new();
        let mut resolved = Vec::new();
        for spec in pins {
            let (pin, _) = self.resolve_pin(spec, dev.site, &[dev.door], None)?;
            let issue = Issue {
                holder,
                name: "Fallback code".into(),
                secret: SecretSpec::Pin {
                    pin: PinSpec::Resolved {
                        pin,
                        origin: Origin::Fallback,
                    },
                },
                schedule: Schedule::Permanent,
                doors: vec![dev.door],
                include_common_areas: false,
                floors: FloorScope::Any,
            };
            let (id, _) = self.issue(issue, None, now)?;
            let c = &mut self.credentials[id.index()];
            c.unassigned_fallback = true;
            // Pre-loaded at installation: already on the lock, nothing to sync.
            for p in &mut c.placements {
                if p.device == device {
                    p.state = SyncState::Set;
                }
            }
            self.devices[device.index()].fallback_pool.push(id);
            made.push(id);
            resolved.push(PinSpec::Resolved {
                pin,
                origin: Origin::Fallback,
            });
        }
        Ok(Applied {
            outcome: Outcome::Credentials(made),
            logged: Command::LoadFallbackPool {
                device,
                pins: resolved,
            },
            sync_changed: Vec::new(),
        })
    }
}

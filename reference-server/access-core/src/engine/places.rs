//! Sites, buildings, floors, units, doors and devices, and what a
//! device carries (guest settings, listings).

use super::*;

impl Engine {
    /// `CreateSite`.
    pub(super) fn create_site(
        &mut self,
        org: OrgId,
        name: &str,
        time_zone: &str,
        settings: SiteSettings,
    ) -> Result<SiteId, EngineError> {
        check_name("name", name)?;
        get(&self.orgs, "organization", org.0)?;
        settings
            .lockout
            .check()
            .map_err(|r| EngineError::invalid("settings.lockout", r))?;
        let tz = TimeZone::get(time_zone).map_err(|_| {
            EngineError::invalid(
                "time_zone",
                format!("{time_zone:?} is not an IANA time zone (like Europe/Berlin)"),
            )
        })?;
        let id = SiteId(next_id(self.sites.len(), "site")?);
        self.sites.push(Site {
            id,
            org,
            name: name.to_owned(),
            time_zone: time_zone.to_owned(),
            tz,
            settings,
        });
        Ok(id)
    }

    /// `UpdateSiteSettings`.
    pub(super) fn update_site_settings(
        &mut self,
        site: SiteId,
        settings: SiteSettings,
    ) -> Result<(), EngineError> {
        settings
            .lockout
            .check()
            .map_err(|r| EngineError::invalid("settings.lockout", r))?;
        let s = self
            .sites
            .get_mut(site.index())
            .ok_or_else(|| EngineError::not_found("site", site.0))?;
        s.settings = settings;
        Ok(())
    }

    /// `CreateBuilding`.
    pub(super) fn create_building(
        &mut self,
        site: SiteId,
        name: &str,
    ) -> Result<BuildingId, EngineError> {
        check_name("name", name)?;
        get(&self.sites, "site", site.0)?;
        let id = BuildingId(next_id(self.buildings.len(), "building")?);
        self.buildings.push(Building {
            id,
            site,
            name: name.to_owned(),
        });
        Ok(id)
    }

    /// `CreateFloor`.
    pub(super) fn create_floor(
        &mut self,
        building: BuildingId,
        number: i16,
    ) -> Result<FloorId, EngineError> {
        get(&self.buildings, "building", building.0)?;
        let id = FloorId(next_id(self.floors.len(), "floor")?);
        self.floors.push(Floor {
            id,
            building,
            number,
        });
        Ok(id)
    }

    /// `CreateUnit`.
    pub(super) fn create_unit(
        &mut self,
        floor: FloorId,
        name: &str,
    ) -> Result<UnitId, EngineError> {
        check_name("name", name)?;
        get(&self.floors, "floor", floor.0)?;
        let id = UnitId(next_id(self.units.len(), "unit")?);
        self.units.push(Unit {
            id,
            floor,
            name: name.to_owned(),
        });
        Ok(id)
    }

    /// `CreateDoor`.
    pub(super) fn create_door(
        &mut self,
        site: SiteId,
        name: &str,
        common_area: bool,
        unit: Option<UnitId>,
        lift_floors: &[FloorId],
    ) -> Result<DoorId, EngineError> {
        check_name("name", name)?;
        get(&self.sites, "site", site.0)?;
        if lift_floors.len() > MAX_LIFT_FLOORS {
            return Err(EngineError::invalid(
                "lift_floors",
                format!("at most {MAX_LIFT_FLOORS}"),
            ));
        }
        // Of the site's organization (`action_for`); of the site
        // itself too: a door phone serves its own building's lift.
        let floor_site = |f: FloorId| -> Result<SiteId, EngineError> {
            let b = get(&self.floors, "floor", f.0)?.building;
            Ok(get(&self.buildings, "building", b.0)?.site)
        };
        if let Some(u) = unit {
            if floor_site(get(&self.units, "unit", u.0)?.floor)? != site {
                return Err(EngineError::invalid("unit", "must be on the door's site"));
            }
        }
        for f in lift_floors {
            if floor_site(*f)? != site {
                return Err(EngineError::invalid(
                    "lift_floors",
                    format!("{f} is not on the door's site"),
                ));
            }
        }
        let id = DoorId(next_id(self.doors.len(), "door")?);
        self.doors.push(Door {
            id,
            site,
            name: name.to_owned(),
            common_area,
            unit,
            lift_floors: lift_floors.to_vec(),
        });
        self.door_devices.push(Vec::new());
        self.door_credentials.push(Vec::new());
        Ok(id)
    }

    /// `CreateDevice`.
    #[allow(clippy::too_many_arguments)] // the command's fields, one by one
    pub(super) fn create_device(
        &mut self,
        door: DoorId,
        kind: DeviceKind,
        connectivity: Connectivity,
        name: &str,
        location: &str,
        linked_to: Option<DeviceId>,
        code_slots: u16,
    ) -> Result<DeviceId, EngineError> {
        check_name("name", name)?;
        check_text("location", location, false)?;
        let site = get(&self.doors, "door", door.0)?.site;
        if let Some(l) = linked_to {
            let target = &get(&self.devices, "device", l.0)?.device;
            if target.kind != DeviceKind::Lock || target.door != door {
                return Err(EngineError::invalid(
                    "linked_to",
                    "must be a lock on the same door",
                ));
            }
        }
        let stores_codes = matches!(kind, DeviceKind::Lock | DeviceKind::Keypad);
        if stores_codes && code_slots == 0 {
            return Err(EngineError::invalid(
                "code_slots",
                "a lock or keypad needs at least one code slot",
            ));
        }
        let id = DeviceId(next_id(self.devices.len(), "device")?);
        let device = Device {
            id,
            site,
            door,
            kind,
            connectivity,
            name: name.to_owned(),
            location: location.to_owned(),
            linked_to,
            listings: Vec::new(),
            guest: GuestSettings::default(),
            code_slots,
            stores_codes,
        };
        self.devices.push(DeviceEntry {
            device,
            sync_version: 0,
            fallback_pool: Vec::new(),
            removed: false,
        });
        crate::huge::push(
            &mut self.devices_hot,
            DeviceHot {
                door,
                site,
                stores_codes,
                wrong_tries: AtomicBool::new(false),
                locked_until_s: AtomicI64::new(i64::MIN),
            },
        );
        self.lockouts.push(Mutex::new(Lockout::default()));
        self.door_devices[door.index()].push(id);
        // The keypad and card lookups get the codes the door already holds.
        for c in &self.door_credentials[door.index()] {
            match self.credentials[c.index()].secret {
                Secret::Pin(p) if self.pin_index.get(pin_key(door, p)) == Some(*c) => {
                    self.device_pins
                        .put(KeypadSlot::pending(device_pin_key(id, p), *c));
                }
                Secret::Card(n) if self.card_index.get(&(site, n)) == Some(c) => {
                    self.device_cards.put(CardSlot {
                        key: card_key(id, n),
                        credential: *c,
                    });
                }
                _ => {}
            }
        }
        // Codes that already open this door must reach the new device.
        if stores_codes {
            let existing = self.door_credentials[door.index()].clone();
            for c in existing {
                let cred = &mut self.credentials[c.index()];
                if cred.kind.stored_on_device() && !cred.revoked {
                    cred.placements.push(Placement {
                        device: id,
                        state: SyncState::Pending,
                    });
                    self.bump_sync(id);
                }
            }
        }
        Ok(id)
    }

    /// `UpdateGuestSettings`.
    pub(super) fn update_guest_settings(
        &mut self,
        device: DeviceId,
        settings: GuestSettings,
    ) -> Result<(), EngineError> {
        let d = self
            .devices
            .get_mut(device.index())
            .ok_or_else(|| EngineError::not_found("device", device.0))?;
        d.device.guest = settings;
        Ok(())
    }

    /// `LinkListing`.
    pub(super) fn link_listing(
        &mut self,
        device: DeviceId,
        listing: &str,
    ) -> Result<(), EngineError> {
        check_name("listing", listing)?;
        let d = self
            .devices
            .get_mut(device.index())
            .ok_or_else(|| EngineError::not_found("device", device.0))?;
        if !d.device.listings.iter().any(|l| l == listing) {
            d.device.listings.push(listing.to_owned());
        }
        Ok(())
    }

    /// `UnlinkListing`.
    pub(super) fn unlink_listing(
        &mut self,
        device: DeviceId,
        listing: &str,
    ) -> Result<(), EngineError> {
        let d = self
            .devices
            .get_mut(device.index())
            .ok_or_else(|| EngineError::not_found("device", device.0))?;
        let before = d.device.listings.len();
        d.device.listings.retain(|l| l != listing);
        if d.device.listings.len() == before {
            return Err(EngineError::not_found("listing", 0));
        }
        Ok(())
    }
}

//! Counting outcomes.

use lb_common::stats::Counter;

use lb_common::maps::DIRECTION_FORWARD;

use crate::maps::{BACKEND_STATS, SERVICE_STATS, STATS};

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = STATS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// Counts a translated packet of `bytes` (IP length) against its service
/// and backend; `opened` for the first packet of a connection.
#[inline(always)]
pub fn count_traffic(service_id: u32, backend_id: u32, direction: u8, bytes: u64, opened: bool) {
    let forward = direction == DIRECTION_FORWARD;
    if let Some(service) = SERVICE_STATS.get_ptr_mut(service_id) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            if forward {
                (*service).packets_in += 1;
                (*service).bytes_in += bytes;
            } else {
                (*service).packets_out += 1;
                (*service).bytes_out += bytes;
            }
            if opened {
                (*service).connections += 1;
            }
        }
    }
    if let Some(backend) = BACKEND_STATS.get_ptr_mut(backend_id) {
        // SAFETY: as above.
        unsafe {
            if forward {
                (*backend).packets_to += 1;
                (*backend).bytes_to += bytes;
            } else {
                (*backend).packets_from += 1;
                (*backend).bytes_from += bytes;
            }
            if opened {
                (*backend).connections += 1;
            }
        }
    }
}

/// Counts a new connection refused for want of a backend.
#[inline(always)]
pub fn count_refused(service_id: u32) {
    if let Some(service) = SERVICE_STATS.get_ptr_mut(service_id) {
        // SAFETY: per-CPU slot, as above.
        unsafe { (*service).refused += 1 };
    }
}

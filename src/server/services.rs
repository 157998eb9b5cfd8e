//! The services a config runs beside the workers, each started, told of
//! a reload or stopped by the server: active health checks, the trace
//! exporter, the ACME thread.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::watch;

use super::StartError;
use crate::config::Config;
use crate::trace::export::Exporter;
use crate::worker::Generation;

/// Starts the trace exporter of `config`, if it has `[tracing]`.
pub(super) fn start_exporter(
    config: &Config,
    stats: &Arc<crate::trace::Stats>,
) -> Result<Option<Exporter>, StartError> {
    config
        .tracing
        .as_ref()
        .map(|t| Exporter::start(t, stats.clone()).map_err(StartError::TraceExporter))
        .transpose()
}

/// Starts the active health checks of `g`, if it has any.
pub(super) fn start_checks(g: &Generation) -> Option<(JoinHandle<()>, watch::Sender<bool>)> {
    let (stop, rx) = watch::channel(false);
    crate::upstream::check::spawn_checks(&g.config, &g.upstreams, rx).map(|h| (h, stop))
}

pub(super) fn stop_checks(checks: Option<(JoinHandle<()>, watch::Sender<bool>)>) {
    if let Some((handle, stop)) = checks {
        let _ = stop.send(true);
        let _ = handle.join();
    }
}

/// The ACME thread that `g`'s config wants: `running` told of new
/// settings, started, or stopped. What the storage holds is read first,
/// so the first handshake under `g` already has it.
pub(super) fn follow_acme(
    running: Option<crate::acme::Manager>,
    g: &Generation,
) -> Option<crate::acme::Manager> {
    let Some(settings) = &g.config.acme else {
        if let Some(m) = running {
            m.stop();
        }
        return None;
    };
    let settings = Arc::new(settings.clone());
    crate::acme::load(&settings, &g.acme);
    match running {
        Some(m) => {
            m.update(settings);
            Some(m)
        }
        None => match crate::acme::Manager::start(settings, g.acme.clone()) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!("ACME: thread not started, no certificates ordered: {e}");
                None
            }
        },
    }
}

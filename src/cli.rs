//! Command line: parses arguments, sets up logging, runs until a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{AccessLogTarget, Config, ErrorLogFormat};
use crate::server;

/// `tidegate --version`: the crate's version, the commit it was built
/// from and how (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TIDEGATE_COMMIT"),
    ", ",
    env!("TIDEGATE_PROFILE"),
    ")"
);

/// Tidegate: a streaming HTTP reverse proxy.
///
/// Without a subcommand it runs the proxy: from a config file (--config),
/// or in quick mode (--listen and --upstream). The subcommands check a
/// file, control a running Tidegate through its pid file, or print the
/// manual and shell completions.
#[derive(Debug, Parser)]
#[command(
    name = "tidegate",
    version = VERSION,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Running the proxy: only without a subcommand.
    #[command(flatten)]
    run: RunArgs,
}

/// What running the proxy takes: where its config comes from, and the
/// settings that override the file's.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Configuration file (TOML) to run with; reloaded on SIGHUP.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Quick mode: address to listen on, e.g. 127.0.0.1:8080.
    #[arg(
        long,
        value_name = "ADDR",
        requires = "upstream",
        conflicts_with = "config",
        help_heading = "Quick mode (no config file)"
    )]
    listen: Option<String>,

    /// Quick mode: upstream server (http://host:port); repeat for round-robin.
    #[arg(
        long,
        value_name = "URL",
        requires = "listen",
        help_heading = "Quick mode (no config file)"
    )]
    upstream: Vec<String>,

    #[command(flatten)]
    overrides: Overrides,
}

/// Settings that override the configuration file.
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "Overriding the config file")]
struct Overrides {
    /// Access log: off, stdout, or a file path.
    #[arg(long, value_name = "off|stdout|PATH")]
    access_log: Option<String>,

    /// Access-log format: default, combined, json, or a $variable template.
    #[arg(long, value_name = "FORMAT", value_parser = crate::config::LogFormat::parse)]
    access_log_format: Option<crate::config::LogFormat>,

    /// Log filter: error, warn, info, debug, trace (or a tracing filter).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,

    /// The process's own log: text lines (the default), or one JSON
    /// object per line.
    #[arg(long, value_name = "text|json")]
    log_format: Option<crate::config::ErrorLogFormat>,

    /// Serve the admin endpoints (/metrics, /healthz, /readyz, /config,
    /// /reload...) here, as `[admin] address` does (no token).
    #[arg(long, value_name = "ADDR")]
    admin: Option<std::net::SocketAddr>,

    /// Worker threads (default: the number of cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Bind worker thread i to the i-th CPU the process may use (auto), or
    /// let the kernel place them (off, the default).
    #[arg(long, value_name = "off|auto")]
    cpu_affinity: Option<crate::config::CpuAffinity>,

    /// Write the process id here while running (for `tidegate reload`,
    /// `reopen` and `upgrade`).
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,
}

/// The subcommands. Each declares only its own options: a new one is a
/// variant here and an arm in [`main`].
#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file: print what is wrong and exit non-zero,
    /// or exit 0 when it is valid.
    Check {
        /// The configuration file (TOML) to check.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Make a running Tidegate reload its config file: checks the file,
    /// sends SIGHUP, and waits for the process's answer (exit 0: reloaded;
    /// 1: refused, with the reasons; 2: the file is not valid, nothing
    /// sent).
    Reload {
        /// The pid file the running Tidegate was given with --pid-file.
        #[arg(long, value_name = "PATH")]
        pid_file: PathBuf,
        /// The config file to check first (default: the one the running
        /// process was started with).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Zero-downtime binary upgrade: the running Tidegate starts the
    /// binary now on disk, hands it its listening sockets and drains once
    /// it serves (sends it SIGUSR2; waits for the new process).
    Upgrade {
        /// The pid file the running Tidegate was given with --pid-file.
        #[arg(long, value_name = "PATH")]
        pid_file: PathBuf,
    },
    /// Make a running Tidegate reopen its access-log file, after logrotate
    /// moved it (sends it SIGUSR1, as nginx's `-s reopen` does).
    Reopen {
        /// The pid file the running Tidegate was given with --pid-file.
        #[arg(long, value_name = "PATH")]
        pid_file: PathBuf,
    },
    /// Write an nginx configuration (its includes followed) as Tidegate
    /// TOML; every directive not converted is listed on stderr as
    /// FILE:LINE: DIRECTIVE: why.
    Convert {
        /// The nginx configuration file.
        file: PathBuf,
        /// Write the TOML here instead of to stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Start a demo origin and Tidegate in front of it.
    Demo {
        /// Address for the proxy.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Print the manual page (roff: `tidegate man | man -l -`).
    Man {
        /// Write tidegate.1 and a page per subcommand (tidegate-check.1...)
        /// into this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the completion script for a shell (e.g. `source <(tidegate
    /// completions bash)`).
    Completions {
        /// The shell to complete for.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

/// The `tidegate` binary's whole behaviour.
pub fn main() -> ExitCode {
    // A binary upgrade under a service manager starts the new process
    // through a copy of this binary that only does that (`server::spawn`).
    if let Some(code) = server::detach_if_asked() {
        return code;
    }
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Check { config }) => {
            // Loaded, then put into service without starting: certificates
            // are read and names resolved, as start does.
            let checked = Config::from_file(config).and_then(|c| {
                let summary = format!(
                    "{} listener(s), {} route(s), {} upstream group(s)",
                    c.listeners.len(),
                    c.routes.len(),
                    c.upstreams.len()
                );
                crate::server::check(c).map(|()| summary)
            });
            match checked {
                Ok(summary) => {
                    println!("{}: valid ({summary})", config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    report(&e);
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Reload { pid_file, config }) => {
            crate::control::reload(pid_file, config.as_deref())
        }
        Some(Command::Upgrade { pid_file }) => crate::control::upgrade(pid_file),
        Some(Command::Reopen { pid_file }) => {
            crate::control::signal(pid_file, rustix::process::Signal::USR1, "SIGUSR1")
        }
        Some(Command::Convert { file, output }) => crate::convert::run(file, output.as_deref()),
        Some(Command::Demo { listen }) => {
            let origin = match crate::demo::spawn() {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("tidegate: cannot start the demo origin: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let config = Config::quick(listen, &[format!("http://{origin}")]);
            run(config, None, &Overrides::default(), Some(origin))
        }
        Some(Command::Man { dir }) => man(dir.as_deref()),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "tidegate",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        None => {
            let args = &cli.run;
            let config = match (&args.config, &args.listen) {
                (Some(path), _) => Config::from_file(path),
                (None, Some(listen)) => Config::quick(listen, &args.upstream),
                (None, None) => {
                    eprintln!(
                        "tidegate: give --config FILE, or --listen ADDR --upstream URL \
                         (or try `tidegate demo`); see --help"
                    );
                    return ExitCode::from(2);
                }
            };
            run(config, args.config.as_deref(), &args.overrides, None)
        }
    }
}

/// `tidegate man`: the page on stdout, or every page into `dir`.
fn man(dir: Option<&std::path::Path>) -> ExitCode {
    // No page for clap's `help` subcommand: the main page is the same on
    // stdout as in `dir`.
    let cmd = Cli::command().disable_help_subcommand(true);
    let written = match dir {
        Some(dir) => clap_mangen::generate_to(cmd, dir),
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidegate: man: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A config error on stderr: one line per problem.
fn report(e: &crate::config::ConfigError) {
    for line in e.to_string().lines() {
        eprintln!("tidegate: {line}");
    }
}

/// The command line's settings on top of the file's.
fn apply_overrides(config: &mut Config, overrides: &Overrides) {
    if let Some(a) = &overrides.access_log {
        config.access_log = AccessLogTarget::parse(a);
    }
    if let Some(l) = &overrides.log_level {
        config.log_level = l.clone();
    }
    if let Some(f) = overrides.log_format {
        config.log_format = f;
    }
    if let Some(f) = &overrides.access_log_format {
        config.access_log_format = f.clone();
    }
    if let Some(t) = overrides.threads {
        config.threads = if t == 0 {
            crate::config::default_threads()
        } else {
            t
        };
    }
    if let Some(a) = overrides.cpu_affinity {
        config.cpu_affinity = a;
    }
    if let Some(addr) = overrides.admin {
        let token = config.admin.take().and_then(|a| a.token);
        config.admin = Some(crate::config::Admin { addr, token });
    }
}

fn run(
    config: Result<Config, crate::config::ConfigError>,
    config_path: Option<&std::path::Path>,
    overrides: &Overrides,
    demo_origin: Option<std::net::SocketAddr>,
) -> ExitCode {
    let mut config = match config {
        Ok(c) => c,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    apply_overrides(&mut config, overrides);
    let filter = match tracing_subscriber::EnvFilter::try_new(&config.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("tidegate: --log-level `{}`: {e}", config.log_level);
            return ExitCode::from(2);
        }
    };
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        ErrorLogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // `timestamp`, `level`, `fields` (the message and the event's
        // own fields), `target`; spans, if any, too.
        ErrorLogFormat::Json => log.json().with_ansi(false).init(),
    }

    // Signal handlers go in before the proxy starts: a SIGTERM that comes
    // right after "listening" must drain, not kill.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidegate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signals = match rt.block_on(async { crate::control::Signals::install() }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tidegate: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };

    let threads = config.threads;
    let schemes: Vec<&str> = config
        .listeners
        .iter()
        .map(|l| if l.tls.is_some() { "https" } else { "http" })
        .collect();
    // The sockets of the process this one upgrades, if it is one.
    let mut inherited = match server::Inherited::take() {
        None => None,
        Some(Ok(i)) => Some(i),
        Some(Err(e)) => {
            eprintln!("tidegate: upgrade: cannot take over the listening sockets: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut running = match server::start_with(config, inherited.as_mut()) {
        Ok(r) => r,
        Err(server::StartError::Config(e)) => {
            report(&e);
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("tidegate: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The admin API's `POST /reload` comes here too, so that reloads run
    // one at a time, on this thread, which owns `running`. Taken before
    // anything says the process serves: a reload asked right after is
    // not refused.
    let mut admin_reloads = config_path.and_then(|_| running.admin_reloads());
    for (a, scheme) in running.local_addrs().iter().zip(schemes) {
        tracing::info!("listening on {scheme}://{a} with {threads} thread(s)");
    }
    if let (Some(origin), Some(addr)) = (demo_origin, running.local_addrs().first()) {
        demo_banner(origin, *addr);
    }

    if let Some(p) = &overrides.pid_file {
        if let Err(e) = std::fs::write(p, format!("{}\n", std::process::id())) {
            tracing::error!("cannot write pid file {}: {e}", p.display());
        }
    }
    // Each reload's result, for `tidegate reload` to read.
    let mut answers = overrides
        .pid_file
        .as_deref()
        .map(crate::control::Answers::new);
    // systemd: serving (said before an upgrade's old process is told to
    // go, so that the service always has a main process).
    let listening = running.local_addrs().len();
    crate::notify::ready(&format!(
        "serving on {listening} listener(s) with {threads} thread(s)"
    ));
    let mut watchdog = crate::notify::watchdog_interval(
        inherited.as_ref().and_then(|i| i.old_pid()),
    )
    .map(|every| {
        let _rt = rt.enter();
        let mut pings = tokio::time::interval(every);
        // After a long reload, one ping, not a burst of the missed ones.
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        pings
    });
    if let Some(i) = inherited {
        // The old process drains and exits once this is said.
        match i.ready() {
            Ok(()) => tracing::info!("upgrade: serving on the sockets handed over"),
            Err(e) => tracing::error!("upgrade: cannot tell the old process: {e}"),
        }
    }

    let mut signals = signals;
    // After an upgrade the service goes on, in the new process.
    let mut upgraded = false;
    let signal = loop {
        let event = rt.block_on(async {
            tokio::select! {
                signal = signals.wait() => Event::Signal(signal),
                Some(ask) = next(&mut admin_reloads) => Event::Reload(ask),
                () = crate::notify::tick(&mut watchdog) => Event::Watchdog,
            }
        });
        match event {
            Event::Reload(ask) => {
                let answer = reload(
                    &mut running,
                    config_path,
                    overrides,
                    "admin API",
                    &mut answers,
                );
                let _ = ask.reply.send(answer);
            }
            Event::Signal("SIGHUP") => {
                let _ = reload(&mut running, config_path, overrides, "SIGHUP", &mut answers);
            }
            Event::Watchdog => crate::notify::watchdog(),
            Event::Signal("SIGUSR1") => running.reopen_logs(),
            Event::Signal("SIGUSR2") => match running.upgrade(watchdog.is_some()) {
                Ok(pid) => {
                    tracing::info!("SIGUSR2: new process {pid} serves; this one drains");
                    crate::notify::mainpid(pid);
                    upgraded = true;
                    break "SIGUSR2 (upgraded)";
                }
                Err(e) => {
                    tracing::error!("SIGUSR2: upgrade failed, this process serves on: {e}");
                    if let Some(a) = &mut answers {
                        a.record(&Err(format!("upgrade failed: {e}")));
                    }
                }
            },
            Event::Signal(other) => break other,
        }
    };
    tracing::info!("{signal}: shutting down gracefully");
    if !upgraded {
        crate::notify::stopping();
    }
    running.stop();
    // Not when they are a newer process's (after an upgrade).
    if let Some(p) = &overrides.pid_file {
        crate::control::remove_if_mine(p);
    }
    if let Some(a) = &answers {
        a.remove();
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// What the main loop waits for.
enum Event {
    Signal(&'static str),
    /// `POST /reload` on the admin listener.
    Reload(crate::admin::ReloadAsk),
    /// Time to tell systemd's watchdog that this loop is alive.
    Watchdog,
}

/// The next admin reload request, if there is a channel for them.
async fn next(
    reloads: &mut Option<tokio::sync::mpsc::Receiver<crate::admin::ReloadAsk>>,
) -> Option<crate::admin::ReloadAsk> {
    match reloads {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// SIGHUP or `POST /reload` (`why`): read the file again; swap it in if
/// valid, else keep serving the old one and say why (logged, and
/// returned: one problem a line). systemd is told when it starts and ends,
/// and `tidegate reload` by the answer file.
fn reload(
    running: &mut server::Running,
    config_path: Option<&std::path::Path>,
    overrides: &Overrides,
    why: &str,
    answers: &mut Option<crate::control::Answers>,
) -> Result<(), String> {
    crate::notify::reloading();
    let answer = reload_file(running, config_path, overrides, why);
    crate::notify::reloaded(&answer);
    if let Some(a) = answers {
        a.record(&answer);
    }
    answer
}

fn reload_file(
    running: &mut server::Running,
    config_path: Option<&std::path::Path>,
    overrides: &Overrides,
    why: &str,
) -> Result<(), String> {
    let Some(path) = config_path else {
        tracing::warn!("{why}: no --config file to reload; nothing changed");
        return Err("no --config file to reload".into());
    };
    let refused = |e: String| {
        for line in e.lines() {
            tracing::error!("reload refused, old config still serving: {line}");
        }
        e
    };
    let mut config = match Config::from_file(path) {
        Ok(c) => c,
        Err(e) => {
            running.reloaded(false);
            return Err(refused(e.to_string()));
        }
    };
    apply_overrides(&mut config, overrides);
    match running.reload(config) {
        Ok(()) => {
            tracing::info!("{why}: reloaded {}", path.display());
            Ok(())
        }
        Err(e) => Err(refused(e.to_string())),
    }
}

/// Shows that the demo proxies for real: one request through it, printed.
fn demo_banner(origin: std::net::SocketAddr, proxy: std::net::SocketAddr) {
    use std::io::{Read, Write};
    println!("Tidegate demo: proxy http://{proxy} -> demo origin http://{origin}\n");
    let sample = std::net::TcpStream::connect(proxy).and_then(|mut s| {
        s.write_all(b"GET / HTTP/1.1\r\nHost: demo.local\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    });
    match sample {
        Ok(r) => println!("A request through the proxy just now:\n\n{r}"),
        Err(e) => println!("(sample request failed: {e})"),
    }
    println!("Try it yourself:");
    println!("  curl -i http://{proxy}/");
    println!("  curl -s http://{proxy}/bytes/1073741824 | wc -c     # 1 GiB, streamed");
    println!("  curl -s --data-binary @/etc/os-release http://{proxy}/echo");
    println!("Stop with Ctrl-C.");
}

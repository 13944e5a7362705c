//! Entering a network namespace on a thread of its own, and running the lab's tools with a
//! deadline.
//!
//! A thread that has entered a namespace with `setns` opens its sockets, reads and writes
//! `/proc/sys/net`, and starts child processes in that namespace, all without the cost of an
//! `ip netns exec` (about 5 ms each). Only the thread moves: the rest of the process stays in
//! the namespace it started in, and the thread ends when its work is done.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

/// Where `ip netns add` keeps its namespaces.
pub(super) const NETNS_DIR: &str = "/run/netns";

/// The longest any one tool run (`ip`, `nft`, `conntrack`) may take before it is killed.
pub(super) const TOOL_DEADLINE: Duration = Duration::from_secs(10);

/// Runs `f` on a new thread inside the named namespace and returns what it returned. A panic
/// in `f` resumes on the calling thread.
pub(super) fn in_namespace<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    thread::scope(|scope| {
        let handle = scope.spawn(|| enter(name).map(|()| f()));
        match handle.join() {
            Ok(result) => result,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

/// Moves the calling thread into the named namespace, and checks that it got there: nothing
/// that follows may ever run in the namespace the process started in by mistake.
pub(super) fn enter(name: &str) -> io::Result<()> {
    let path = Path::new(NETNS_DIR).join(name);
    let file = File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("setns into {name}: {e}")))?;
    let want = file.metadata()?;
    let now = fs::metadata("/proc/thread-self/ns/net")?;
    if (want.dev(), want.ino()) != (now.dev(), now.ino()) {
        return Err(io::Error::other(format!(
            "setns into {name} returned but the thread is elsewhere"
        )));
    }
    Ok(())
}

/// Writes one sysctl of the calling thread's namespace, `key` as a path under
/// `/proc/sys/net`. A key the kernel lacks (IPv6 compiled out) is not an error.
pub(super) fn sysctl(key: &str, value: &str) -> io::Result<()> {
    let path = Path::new("/proc/sys/net").join(key);
    match fs::write(&path, value) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        Ok(()) => Ok(()),
    }
}

/// Runs `program args` with `input` on its standard input, in the calling thread's
/// namespace, and fails with what it printed unless it exits with 0 within
/// [`TOOL_DEADLINE`].
pub(super) fn run_tool(program: &str, args: &[&str], input: &str) -> io::Result<()> {
    let describe = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", describe())))?;
    let stderr = child.stderr.take().map(|mut pipe| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    });
    // Every input is a few kilobytes at most, well within a pipe's buffer.
    let written = child
        .stdin
        .take()
        .map_or(Ok(()), |mut stdin| stdin.write_all(input.as_bytes()));
    let status = wait_deadline(&mut child, TOOL_DEADLINE);
    let printed = stderr
        .and_then(|t| t.join().ok())
        .unwrap_or_default()
        .trim()
        .to_owned();
    match status? {
        Some(status) if status.success() => written,
        Some(status) => Err(io::Error::other(format!(
            "{} failed ({status}): {printed}\ninput:\n{input}",
            describe()
        ))),
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{} ran past {TOOL_DEADLINE:?} and was killed", describe()),
        )),
    }
}

/// Waits for `child` to exit for at most `timeout`; past it, kills and reaps it and returns
/// `None`.
pub(super) fn wait_deadline(
    child: &mut Child,
    timeout: Duration,
) -> io::Result<Option<ExitStatus>> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        // Tools finish in a few milliseconds: poll finely at first, then back off.
        let step = if elapsed < Duration::from_millis(100) {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(10)
        };
        thread::sleep(step.min(timeout - elapsed));
    }
}

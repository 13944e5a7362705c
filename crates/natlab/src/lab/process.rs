//! A process started inside the lab: killed when dropped, and killed when its lab goes down,
//! with what it prints collected line by line as it runs.

use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::ns::wait_deadline;

/// How long to wait for a process to die after SIGKILL, and for its pipes to close after it
/// exited (a grandchild may still hold them).
const REAP_DEADLINE: Duration = Duration::from_secs(2);

/// A child process started with [`super::Lab::spawn`]. Dropping it kills it (SIGKILL, by its
/// PID, which stays ours until it is reaped); so does dropping its lab.
#[derive(Debug)]
pub struct LabProcess {
    child: Arc<Mutex<Child>>,
    pid: u32,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
}

/// One output stream, read to its end by a thread of its own.
#[derive(Debug, Default)]
struct Lines {
    state: Mutex<LinesState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct LinesState {
    lines: Vec<String>,
    closed: bool,
}

impl LabProcess {
    /// Takes over a child spawned with piped stdout and stderr.
    pub(super) fn new(mut child: Child) -> LabProcess {
        let stdout = Lines::collect(child.stdout.take());
        let stderr = Lines::collect(child.stderr.take());
        LabProcess {
            pid: child.id(),
            child: Arc::new(Mutex::new(child)),
            stdout,
            stderr,
        }
    }

    /// The handle the lab keeps to kill the process when it goes down.
    pub(super) fn handle(&self) -> Weak<Mutex<Child>> {
        Arc::downgrade(&self.child)
    }

    /// The process ID.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Everything the process wrote to stdout so far, one `\n` after each line.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits at most `timeout` for a line of stdout that contains `needle` (among the lines
    /// printed so far too) and returns it; `None` when the time runs out or stdout closes
    /// without one.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.stdout.wait_for(needle, timeout)
    }

    /// As [`LabProcess::wait_for_stdout`], on stderr.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.stderr.wait_for(needle, timeout)
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        lock(&self.child).try_wait()
    }

    /// Waits at most `timeout` for the process to exit, without killing it. Once it has
    /// exited, [`LabProcess::stdout`] and [`LabProcess::stderr`] hold all it printed (unless
    /// a process it started keeps the pipes open for long).
    pub fn wait_timeout(&self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.try_wait()? {
                break status;
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(5).min(timeout - elapsed));
        };
        let drain = timeout.saturating_sub(start.elapsed()).max(REAP_DEADLINE);
        self.stdout.wait_closed(drain);
        self.stderr.wait_closed(drain);
        Ok(Some(status))
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&self) -> io::Result<()> {
        kill(&self.child)
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        let _ = kill(&self.child);
    }
}

/// Kills a child unless it was reaped already (then its PID may belong to another process
/// and no signal is sent), and reaps it.
pub(super) fn kill(child: &Mutex<Child>) -> io::Result<()> {
    let mut child = lock(child);
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    child.kill()?;
    wait_deadline(&mut child, REAP_DEADLINE).map(drop)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves a `Child` that is still fine to use.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lines {
    fn collect(pipe: Option<impl Read + Send + 'static>) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let Some(pipe) = pipe else {
            lock(&lines.state).closed = true;
            return lines;
        };
        let writer = Arc::clone(&lines);
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).to_owned();
                        lock(&writer.state).lines.push(line);
                        writer.changed.notify_all();
                    }
                }
            }
            lock(&writer.state).closed = true;
            writer.changed.notify_all();
        });
        lines
    }

    fn text(&self) -> String {
        let state = lock(&self.state);
        let mut text = String::new();
        for line in &state.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.state);
        let mut seen = 0;
        loop {
            if let Some(line) = state.lines[seen..].iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            seen = state.lines.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if state.closed || left.is_zero() {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn wait_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.state);
        while !state.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

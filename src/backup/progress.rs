//! Progress of cairnctl's long operations (`snapshot save`, `snapshot
//! restore`, `defrag`) for a person watching: one line on stderr that
//! rewrites itself (`\r`) a few times a second and ends with a newline.
//!
//! Only on a terminal: [`Progress::on_stderr`] draws nothing at all when
//! stderr is a file or a pipe, so scripted runs print exactly what etcdctl
//! prints. A disabled `Progress` never reads the clock.

use std::io::Write;
use std::time::{Duration, Instant};

/// How often the line is redrawn at most.
pub const REFRESH: Duration = Duration::from_millis(200);

/// A self-overwriting status line (module docs).
pub struct Progress<W: Write> {
    /// `None`: disabled, everything is a no-op.
    out: Option<W>,
    started: Instant,
    last_draw: Option<Instant>,
    /// Characters of the line on screen, blanked by a shorter redraw.
    shown: usize,
    /// A line is on screen without its newline.
    open: bool,
    refresh: Duration,
}

impl Progress<std::io::Stderr> {
    /// Draws on stderr if it is a terminal; else does nothing.
    pub fn on_stderr() -> Self {
        use std::io::IsTerminal as _;
        let err = std::io::stderr();
        let out = err.is_terminal().then_some(err);
        Progress::new(out, REFRESH)
    }
}

impl<W: Write> Progress<W> {
    /// Draws into `out` (`None`: never), at most once per `refresh`.
    pub fn new(out: Option<W>, refresh: Duration) -> Self {
        Progress {
            out,
            started: Instant::now(),
            last_draw: None,
            shown: 0,
            open: false,
            refresh,
        }
    }

    pub fn enabled(&self) -> bool {
        self.out.is_some()
    }

    /// Redraws the line with `line(elapsed)` unless it was drawn less than
    /// the refresh interval ago (the first call always draws).
    pub fn update(&mut self, line: impl FnOnce(Duration) -> String) {
        if self.out.is_some() {
            self.update_at(Instant::now(), line);
        }
    }

    /// [`Progress::update`] at the time `now`.
    pub fn update_at(&mut self, now: Instant, line: impl FnOnce(Duration) -> String) {
        if self.out.is_none() {
            return;
        }
        if self
            .last_draw
            .is_some_and(|last| now.saturating_duration_since(last) < self.refresh)
        {
            return;
        }
        self.last_draw = Some(now);
        let text = line(now.saturating_duration_since(self.started));
        self.draw(&text, false);
    }

    /// Redraws the line now, whenever it was last drawn: for a caller that
    /// keeps its own time (a timer ticking every `REFRESH`), which the
    /// interval check would make miss a tick that comes a little early.
    pub fn redraw(&mut self, line: impl FnOnce(Duration) -> String) {
        if self.out.is_some() {
            let now = Instant::now();
            self.last_draw = Some(now);
            let text = line(now.saturating_duration_since(self.started));
            self.draw(&text, false);
        }
    }

    /// Draws the last state, `line(elapsed)`, and ends the line: later
    /// output starts on a line of its own.
    pub fn finish(&mut self, line: impl FnOnce(Duration) -> String) {
        if self.out.is_some() {
            let text = line(self.started.elapsed());
            self.draw(&text, true);
        }
    }

    fn draw(&mut self, text: &str, last: bool) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let len = text.chars().count();
        let blank = " ".repeat(self.shown.saturating_sub(len));
        let end = if last { "\n" } else { "" };
        // A terminal that went away is no reason to fail the operation.
        let _ = write!(out, "\r{text}{blank}{end}").and_then(|_| out.flush());
        self.shown = if last { 0 } else { len };
        self.open = !last;
    }
}

impl<W: Write> Drop for Progress<W> {
    /// An operation that stopped mid-way (an error) leaves its last state
    /// on screen and the cursor on a new line, for the error message.
    fn drop(&mut self) {
        if self.open {
            if let Some(out) = self.out.as_mut() {
                let _ = out.write_all(b"\n").and_then(|_| out.flush());
            }
        }
    }
}

/// go-humanize's `Bytes` (what etcdctl prints sizes with): SI units, one
/// decimal under 10.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(UNITS.len() - 1);
    let val = (n as f64 / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[e])
    } else {
        format!("{val:.0} {}", UNITS[e])
    }
}

/// `amount` per second over `elapsed`, as `12 MB/s` (0 B/s at the start).
pub fn rate(amount: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let per_sec = if secs > 0.0 {
        (amount as f64 / secs) as u64
    } else {
        0
    };
    format!("{}/s", human_bytes(per_sec))
}

/// An elapsed time as `1.2s`.
pub fn seconds(elapsed: Duration) -> String {
    format!("{:.1}s", elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> (std::rc::Rc<std::cell::RefCell<Vec<u8>>>, Sink) {
        let buf = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        (buf.clone(), Sink(buf))
    }

    struct Sink(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(buf: &std::rc::Rc<std::cell::RefCell<Vec<u8>>>) -> String {
        String::from_utf8_lossy(&buf.borrow()).into_owned()
    }

    #[test]
    fn redraws_at_most_once_per_interval_and_ends_with_a_newline() {
        let (buf, sink) = shared();
        let mut p = Progress::new(Some(sink), Duration::from_millis(200));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        p.update_at(ms(0), |_| "first line".into());
        p.update_at(ms(100), |_| "too soon".into());
        p.update_at(ms(199), |_| "still too soon".into());
        p.update_at(ms(200), |_| "second".into());
        p.update_at(ms(450), |_| "third".into());
        p.finish(|_| "done".into());
        // A shorter line blanks what the longer one left.
        assert_eq!(text(&buf), "\rfirst line\rsecond    \rthird \rdone \n");
        drop(p);
        assert!(text(&buf).ends_with("done \n"), "no second newline");
    }

    #[test]
    fn an_unfinished_line_gets_its_newline_when_dropped() {
        let (buf, sink) = shared();
        let mut p = Progress::new(Some(sink), REFRESH);
        p.update(|_| "half way".into());
        drop(p);
        assert_eq!(text(&buf), "\rhalf way\n");
    }

    #[test]
    fn a_redraw_is_never_skipped() {
        let (buf, sink) = shared();
        let mut p = Progress::new(Some(sink), Duration::from_secs(3600));
        p.redraw(|_| "one".into());
        p.redraw(|_| "two".into());
        p.update(|_| "skipped".into());
        assert_eq!(text(&buf), "\rone\rtwo");
    }

    #[test]
    fn a_disabled_progress_prints_nothing() {
        let mut p: Progress<Sink> = Progress::new(None, REFRESH);
        assert!(!p.enabled());
        p.update(|_| panic!("a disabled progress renders nothing"));
        p.redraw(|_| panic!("a disabled progress renders nothing"));
        p.finish(|_| panic!("a disabled progress renders nothing"));
    }

    #[test]
    fn rates_and_times_read_well() {
        assert_eq!(rate(12_000_000, Duration::from_secs(2)), "6.0 MB/s");
        assert_eq!(rate(5, Duration::ZERO), "0 B/s");
        assert_eq!(seconds(Duration::from_millis(1234)), "1.2s");
    }

    #[test]
    fn sizes_print_like_go_humanize() {
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(2_100_000), "2.1 MB");
        assert_eq!(human_bytes(4096), "4.1 kB");
    }
}

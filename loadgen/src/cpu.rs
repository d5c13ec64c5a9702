//! The client's own CPU time (user and system), from `/proc/self/stat`, so a saturated client shows.

/// Cumulative CPU seconds of this process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct CpuTimes {
    pub user: f64,
    pub sys: f64,
}

impl CpuTimes {
    /// Now; zero if `/proc` is unreadable (the report then shows no CPU rather than failing the run).
    pub fn now() -> CpuTimes {
        std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|text| parse_stat(&text, rustix::param::clock_ticks_per_second()))
            .unwrap_or_default()
    }

    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: (self.user - earlier.user).max(0.0),
            sys: (self.sys - earlier.sys).max(0.0),
        }
    }
}

/// utime and stime are fields 14 and 15; the command name (field 2) may hold spaces and
/// parentheses, so count from the last `)`.
fn parse_stat(text: &str, ticks_per_second: u64) -> Option<CpuTimes> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let sys: u64 = fields.next()?.parse().ok()?;
    let hz = ticks_per_second.max(1) as f64;
    Some(CpuTimes {
        user: user as f64 / hz,
        sys: sys as f64 / hz,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_an_odd_command_name() {
        let line = "4242 (a) b (c)) R 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 1 0";
        let cpu = parse_stat(line, 100).unwrap();
        assert_eq!(
            cpu,
            CpuTimes {
                user: 2.5,
                sys: 0.75
            }
        );
        assert!(parse_stat("garbage", 100).is_none());
    }

    #[test]
    fn this_process_has_a_readable_cpu_time() {
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat(&text, 100).is_some());
    }
}

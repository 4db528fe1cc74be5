//! This replica's shard from its flags: `--shard N --total-shards M`, or
//! `--shard-from-hostname --total-shards M`, which takes N from the ordinal
//! at the end of a StatefulSet pod's name (`exporter-2`). Which tables a
//! shard owns is [`Shard::owns`](crate::state::Shard::owns).

use crate::state::Shard;

/// The sharding flags, as the binary's flags include them (clap's
/// `#[command(flatten)]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct ShardFlags {
    /// This replica's shard, 0 to M-1: it polls only the tables whose stable hash falls in it.
    #[arg(long, value_name = "N", requires = "total_shards")]
    pub shard: Option<u32>,
    /// How many replicas share the tables (M); with --shard or --shard-from-hostname.
    #[arg(long = "total-shards", value_name = "M")]
    pub total_shards: Option<u32>,
    /// Take the shard from the ordinal at the end of the host name (a StatefulSet pod such as `exporter-2`).
    #[arg(
        long = "shard-from-hostname",
        conflicts_with = "shard",
        requires = "total_shards"
    )]
    pub from_host_name: bool,
}

/// Why the sharding flags name no shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("--total-shards must be at least 1")]
    NoShards,
    #[error("--total-shards needs --shard N or --shard-from-hostname")]
    NoIndex,
    #[error(
        "--shard-from-hostname: cannot read the host name (HOSTNAME or /proc/sys/kernel/hostname)"
    )]
    NoHostName,
    #[error("--shard-from-hostname: host name {0:?} does not end in -N (a StatefulSet pod name such as exporter-2)")]
    NoOrdinal(String),
    #[error("shard {index} is out of range: --total-shards {total} allows 0 to {}", total - 1)]
    OutOfRange { index: u32, total: u32 },
}

impl ShardFlags {
    /// The replica's shard; without `--total-shards`, [`Shard::ALL`].
    /// `host_name` is asked only for `--shard-from-hostname` (pass
    /// [`host_name`] in production).
    pub fn resolve(self, host_name: impl FnOnce() -> Option<String>) -> Result<Shard, ShardError> {
        let Some(total) = self.total_shards else {
            return Ok(Shard::ALL);
        };
        if total == 0 {
            return Err(ShardError::NoShards);
        }
        let index = if self.from_host_name {
            let name = host_name().ok_or(ShardError::NoHostName)?;
            ordinal(&name).ok_or(ShardError::NoOrdinal(name))?
        } else {
            self.shard.ok_or(ShardError::NoIndex)?
        };
        if index >= total {
            return Err(ShardError::OutOfRange { index, total });
        }
        Ok(Shard { index, total })
    }
}

/// The number after the last `-` of a StatefulSet pod name.
fn ordinal(name: &str) -> Option<u32> {
    let (_, digits) = name.trim().rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The host name: `HOSTNAME` (set in every Kubernetes pod), else the
/// kernel's.
pub fn host_name() -> Option<String> {
    host_name_from(std::env::var("HOSTNAME").ok(), || {
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok()
    })
}

fn host_name_from(
    variable: Option<String>,
    kernel: impl FnOnce() -> Option<String>,
) -> Option<String> {
    variable
        .filter(|h| !h.trim().is_empty())
        .or_else(kernel)
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(shard: Option<u32>, total_shards: Option<u32>, from_host_name: bool) -> ShardFlags {
        ShardFlags {
            shard,
            total_shards,
            from_host_name,
        }
    }

    #[test]
    fn shards_come_from_flags_or_the_host_name() {
        let host = |name: &str| {
            let name = name.to_string();
            move || Some(name)
        };
        let never = || -> Option<String> { panic!("the host name is not needed") };
        assert_eq!(ShardFlags::default().resolve(never), Ok(Shard::ALL));
        // --shard alone is refused by clap; here it means nothing.
        assert_eq!(flags(Some(1), None, false).resolve(never), Ok(Shard::ALL));
        assert_eq!(
            flags(Some(2), Some(3), false).resolve(never),
            Ok(Shard { index: 2, total: 3 })
        );
        assert_eq!(
            flags(None, Some(3), true).resolve(host("exporter-1")),
            Ok(Shard { index: 1, total: 3 })
        );
        assert_eq!(
            flags(None, Some(1), true).resolve(host(" dke-0\n")),
            Ok(Shard { index: 0, total: 1 })
        );
    }

    #[test]
    fn bad_shard_flags_say_what_is_wrong() {
        let cases = [
            (
                flags(Some(3), Some(3), false),
                "x",
                "shard 3 is out of range: --total-shards 3 allows 0 to 2",
            ),
            (
                flags(Some(0), Some(0), false),
                "x",
                "--total-shards must be at least 1",
            ),
            (
                flags(None, Some(2), false),
                "x",
                "--total-shards needs --shard N or --shard-from-hostname",
            ),
            (
                flags(None, Some(2), true),
                "exporter",
                "--shard-from-hostname: host name \"exporter\" does not end in -N (a StatefulSet pod name such as exporter-2)",
            ),
            (
                flags(None, Some(2), true),
                "exporter-7",
                "shard 7 is out of range: --total-shards 2 allows 0 to 1",
            ),
        ];
        for (flags, host, message) in cases {
            let err = flags.resolve(|| Some(host.to_string())).unwrap_err();
            assert_eq!(err.to_string(), message, "{flags:?} on {host}");
        }
        assert_eq!(
            flags(None, Some(2), true).resolve(|| None),
            Err(ShardError::NoHostName)
        );
        assert_eq!(
            ShardError::NoHostName.to_string(),
            "--shard-from-hostname: cannot read the host name (HOSTNAME or /proc/sys/kernel/hostname)"
        );
    }

    #[test]
    fn ordinals_are_the_digits_after_the_last_dash() {
        for (name, expected) in [
            ("dke-10", Some(10)),
            ("my-exporter-2", Some(2)),
            ("dke-0\n", Some(0)),
            ("dke-", None),
            ("dke-1a", None),
            ("dke-+1", None),
            ("dke", None),
            ("dke-99999999999", None),
        ] {
            assert_eq!(ordinal(name), expected, "{name:?}");
        }
    }

    #[test]
    fn the_host_name_is_the_variable_else_the_kernels() {
        let kernel = |name: &'static str| move || Some(name.to_string());
        let no_kernel = || None;
        assert_eq!(
            host_name_from(Some("pod-1".into()), kernel("node\n")),
            Some("pod-1".into())
        );
        assert_eq!(
            host_name_from(Some("  ".into()), kernel("node\n")),
            Some("node".into())
        );
        assert_eq!(host_name_from(None, kernel("node\n")), Some("node".into()));
        assert_eq!(host_name_from(None, kernel("\n")), None);
        assert_eq!(host_name_from(None, no_kernel), None);
    }

    #[test]
    fn clap_reads_the_flags_and_refuses_what_names_no_shard() {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            sharding: ShardFlags,
        }
        let parse = |args: &[&str]| {
            let all = std::iter::once("exporter").chain(args.iter().copied());
            <Cli as clap::Parser>::try_parse_from(all).map(|cli| cli.sharding)
        };
        assert_eq!(parse(&[]).unwrap(), ShardFlags::default());
        assert_eq!(
            parse(&["--shard", "2", "--total-shards", "3"]).unwrap(),
            flags(Some(2), Some(3), false)
        );
        assert_eq!(
            parse(&["--shard-from-hostname", "--total-shards=3"]).unwrap(),
            flags(None, Some(3), true)
        );
        for refused in [
            &["--shard", "1"][..],
            &["--shard-from-hostname"],
            &[
                "--shard",
                "1",
                "--shard-from-hostname",
                "--total-shards",
                "2",
            ],
            &["--shard", "-1", "--total-shards", "2"],
        ] {
            assert!(parse(refused).is_err(), "{refused:?}");
        }
    }
}

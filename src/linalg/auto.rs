//! What `compute: auto` means on this machine: bf16 only where its products
//! are measured clearly faster than f32's.
//!
//! Having bf16 instructions is not enough. On a 2-core Xeon with
//! AVX512-BF16 but no AMX, oneDNN 2.6's bf16 GEMM ran at 0.58x its f32
//! (166 against 284 GFLOP/s on the encoder's shape), so a bf16 SAE step took
//! 139 ms against 117 in f32; AMX gave 2.2-4x and an AMD Zen 4 about 1.9x.
//! The choice is measured once per machine (CPU model, its flags and the
//! library) and remembered in the user's cache folder: a different choice
//! would change every extract and train artifact's bytes and key, so the same
//! machine must resolve `auto` the same way in every run, however noisy.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{cpu, gemm_bf16, sgemm, to_bf16_vec, Compute, Trans};

/// bf16 must beat f32 by this factor to be chosen: it costs accuracy
/// (resid_post within ~0.2% of f32), which a marginal gain does not pay for.
pub const MIN_BF16_SPEEDUP: f64 = 1.25;

/// The measured rates behind `auto` and what they chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoChoice {
    pub compute: Compute,
    /// Single-threaded GFLOP/s on the measured shape, best of several calls.
    pub f32_gflops: f64,
    pub bf16_gflops: f64,
    /// The machine the figures belong to (CPU model, flags, library).
    pub machine: String,
    /// When they were measured (seconds since the Unix epoch).
    pub measured_unix: u64,
    /// The file that remembers them (None: not remembered, see `note`).
    #[serde(skip)]
    pub remembered_in: Option<PathBuf>,
    /// Measured by this process (else read from `remembered_in`).
    #[serde(skip)]
    pub fresh: bool,
    /// Why the choice could not be read or remembered, when it could not.
    #[serde(skip)]
    pub note: Option<String>,
}

impl AutoChoice {
    /// bf16's rate over f32's.
    pub fn speedup(&self) -> f64 {
        self.bf16_gflops / self.f32_gflops
    }

    /// One line for notes and `make bench`: the choice and why.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} (bf16 products at {:.2}x f32 on this CPU: {:.0} against {:.0} GFLOP/s \
             single-threaded; bf16 needs {MIN_BF16_SPEEDUP}x)",
            self.compute,
            self.speedup(),
            self.bf16_gflops,
            self.f32_gflops
        );
        match (&self.remembered_in, self.fresh) {
            (Some(p), true) => s += &format!("; measured now, remembered in {}", p.display()),
            (Some(p), false) => {
                s += &format!(
                    "; remembered in {} (delete it to measure again)",
                    p.display()
                )
            }
            (None, _) => s += "; measured now",
        }
        if let Some(n) = &self.note {
            s += &format!("; {n}");
        }
        s
    }
}

/// The process's choice, made at its first use.
static CHOICE: OnceLock<AutoChoice> = OnceLock::new();

/// The choice for this process: remembered, or measured now and remembered.
/// Only for CPUs with bf16 hardware (elsewhere `auto` is f32 unmeasured).
pub fn auto_choice() -> &'static AutoChoice {
    CHOICE.get_or_init(|| choose(cache_dir().as_deref(), &machine_key(), measure))
}

/// The choice if this process has made it (manifests record it then).
pub fn auto_choice_made() -> Option<&'static AutoChoice> {
    CHOICE.get()
}

/// Where machine-level facts are remembered: `COACT_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/coact`, else `~/.cache/coact`.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("COACT_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|p| p.join("coact")))
        .or_else(|| var("HOME").map(|p| p.join(".cache").join("coact")))
}

/// The machine as far as the products' speed goes.
pub fn machine_key() -> String {
    let c = cpu();
    format!("{} | {} | oneDNN (libdnnl)", c.model, c.flags())
}

/// The choice for `machine`: read from `dir` when remembered there, else
/// `measure()` (f32 and bf16 GFLOP/s) and remember it. Two processes that
/// measure at once keep the first file written, so both use its choice.
pub fn choose(
    dir: Option<&Path>,
    machine: &str,
    measure: impl FnOnce() -> (f64, f64),
) -> AutoChoice {
    let Some(dir) = dir else {
        let mut c = decide(machine, measure);
        c.note = Some("no cache folder (set COACT_CACHE_DIR or HOME) to remember it in".into());
        return c;
    };
    let path = dir.join(format!("linalg-auto-{:016x}.json", fnv1a(machine)));
    let mut note = None;
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<AutoChoice>(&bytes) {
            Ok(c) if c.machine == machine && c.f32_gflops > 0.0 && c.bf16_gflops > 0.0 => {
                return AutoChoice {
                    remembered_in: Some(path),
                    fresh: false,
                    ..c
                };
            }
            Ok(_) => {
                note = Some(format!(
                    "{} held another machine's figures; measured again",
                    path.display()
                ))
            }
            Err(e) => {
                note = Some(format!(
                    "{} was unreadable ({e}); measured again",
                    path.display()
                ))
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            note = Some(format!(
                "could not read {} ({e}); measured again",
                path.display()
            ))
        }
    }
    let c = decide(machine, measure);
    match remember(dir, &path, &c, note.is_some()) {
        Ok(kept) => AutoChoice {
            remembered_in: Some(path),
            note,
            ..kept
        },
        Err(e) => AutoChoice {
            note: Some(format!("could not remember it in {} ({e})", path.display())),
            ..c
        },
    }
}

fn decide(machine: &str, measure: impl FnOnce() -> (f64, f64)) -> AutoChoice {
    let (f32_gflops, bf16_gflops) = measure();
    let compute = if bf16_gflops >= MIN_BF16_SPEEDUP * f32_gflops {
        Compute::Bf16
    } else {
        Compute::F32
    };
    AutoChoice {
        compute,
        f32_gflops,
        bf16_gflops,
        machine: machine.to_string(),
        measured_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        remembered_in: None,
        fresh: true,
        note: None,
    }
}

/// Writes `c` to `path` without ever clobbering a complete file another
/// process wrote first (a temporary file, then a hard link, which fails if
/// the name exists), unless `replace` (the file there is known bad). Returns
/// the choice the file holds afterwards.
fn remember(dir: &Path, path: &Path, c: &AutoChoice, replace: bool) -> std::io::Result<AutoChoice> {
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile_in(dir)?;
    tmp.1
        .write_all(&serde_json::to_vec_pretty(c).map_err(std::io::Error::other)?)?;
    tmp.1.sync_all()?;
    let result = if replace {
        std::fs::rename(&tmp.0, path).map(|_| c.clone())
    } else {
        match std::fs::hard_link(&tmp.0, path) {
            Ok(()) => Ok(c.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let bytes = std::fs::read(path)?;
                let theirs: AutoChoice =
                    serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
                Ok(AutoChoice {
                    fresh: false,
                    ..theirs
                })
            }
            Err(e) => Err(e),
        }
    };
    let _ = std::fs::remove_file(&tmp.0);
    result
}

/// A new file in `dir` with a name no other process uses.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let p = dir.join(format!(".linalg-auto.{}.{stamp}.tmp", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)?;
    Ok((p, f))
}

/// FNV-1a, 64 bits: a stable file name for the machine key.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Single-threaded f32 and bf16 GFLOP/s on the SAE encoder's shape
/// (`[256, 640] x [640, 2048]`, weights transposed; the forward's linear
/// layers ranked the two paths the same way in every measurement), best of
/// seven calls each, interleaved so that a burst of noise hits both.
fn measure() -> (f64, f64) {
    let (m, k, n) = (256usize, 640usize, 2048usize);
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let (xb, wb) = (to_bf16_vec(&x), to_bf16_vec(&w));
    let mut c = vec![0.0f32; m * n];
    let flops = 2.0 * (m * k * n) as f64;
    let (mut best_f32, mut best_bf16) = (f64::INFINITY, f64::INFINITY);
    for rep in 0..8 {
        let t = Instant::now();
        sgemm(
            Trans::N,
            Trans::T,
            m,
            n,
            k,
            1.0,
            &x,
            k,
            &w,
            k,
            0.0,
            &mut c,
            n,
        );
        let tf = t.elapsed().as_secs_f64();
        let t = Instant::now();
        gemm_bf16(
            Trans::N,
            Trans::T,
            m,
            n,
            k,
            1.0,
            &xb,
            k,
            &wb,
            k,
            0.0,
            &mut c,
            n,
        );
        let tb = t.elapsed().as_secs_f64();
        // The first round warms the JIT kernels and the caches.
        if rep > 0 {
            best_f32 = best_f32.min(tf);
            best_bf16 = best_bf16.min(tb);
        }
    }
    std::hint::black_box(&c);
    (flops / best_f32 / 1e9, flops / best_bf16 / 1e9)
}

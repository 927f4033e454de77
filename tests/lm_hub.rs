//! Loading a model by Hugging Face id: offline from a pre-populated HF cache,
//! and a fast, helpful failure when the hub cannot be reached.
//!
//! Everything runs in one test because it sets process-wide environment
//! variables (HF_HOME, HF_ENDPOINT).

mod lm_support;

use std::time::Instant;

use candle_core::Device;
use coact::lm::{Gemma, ModelSource};
use lm_support::{random_tokens, Tiny};

#[test]
fn hub_source_loads_from_cache_offline_and_fails_fast_otherwise() {
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("HF_HOME", home.path());
    // Nothing listens on port 9 (discard) of the loopback: connections are refused.
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    std::env::remove_var("HF_HUB_OFFLINE");

    // 1. Not cached, hub unreachable: a quick error naming the model and the way out.
    let source = ModelSource::Hub {
        repo: "coact-test/tiny-gemma".into(),
        revision: None,
    };
    let start = Instant::now();
    let err = format!("{:#}", Gemma::load(&source, &Device::Cpu).unwrap_err());
    let took = start.elapsed();
    assert!(err.contains("coact-test/tiny-gemma"), "{err}");
    assert!(err.contains("local path"), "{err}");
    assert!(took.as_secs_f64() < 10.0, "took {took:?}");
    println!("unreachable hub failed in {took:?}: {err}");

    // 2. The same id pre-populated in the HF cache layout loads without network:
    //    HF_HOME/hub/models--coact-test--tiny-gemma/{refs/main, snapshots/<rev>/...}.
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let repo_dir = home
        .path()
        .join("hub")
        .join("models--coact-test--tiny-gemma");
    let snap = repo_dir.join("snapshots").join(rev);
    let tiny = Tiny::gemma2();
    tiny.write(&snap, 9);
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs").join("main"), rev).unwrap();
    let from_hub = Gemma::load(&source, &Device::Cpu).unwrap();
    let from_dir = Gemma::load(&ModelSource::Safetensors(snap.clone()), &Device::Cpu).unwrap();
    let tokens = random_tokens(1, 5, tiny.vocab, 4);
    let a = from_hub.logits(&tokens, None).unwrap();
    let b = from_dir.logits(&tokens, None).unwrap();
    assert_eq!(lm_support::rel_max_abs(&a, &b), 0.0);

    // 3. A pinned revision (commit hash) resolves from the cache too.
    let pinned = ModelSource::Hub {
        repo: "coact-test/tiny-gemma".into(),
        revision: Some(rev.into()),
    };
    assert!(Gemma::load(&pinned, &Device::Cpu).is_ok());

    // 4. HF_HUB_OFFLINE=1 with an uncached model fails at once as well.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let other = ModelSource::Hub {
        repo: "coact-test/not-cached".into(),
        revision: None,
    };
    let err = format!("{:#}", Gemma::load(&other, &Device::Cpu).unwrap_err());
    assert!(
        err.contains("coact-test/not-cached") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    std::env::remove_var("HF_HUB_OFFLINE");
}

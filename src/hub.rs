//! Files from the Hugging Face hub, cached in the usual HF cache (HF_HOME is
//! respected). The only place coact touches the network, and only when a
//! configuration names a hub id.

use anyhow::{anyhow, Result};
use std::path::PathBuf;

/// Returns the local path of `file` in `repo` (at `revision`, default main),
/// downloading it into the HF cache when it is not cached yet.
pub fn fetch_file(repo: &str, revision: Option<&str>, file: &str) -> Result<PathBuf> {
    fetch(repo, hf_hub::RepoType::Model, revision, file)
}

/// As [`fetch_file`], for a file of a dataset repository.
pub fn fetch_dataset_file(repo: &str, revision: Option<&str>, file: &str) -> Result<PathBuf> {
    fetch(repo, hf_hub::RepoType::Dataset, revision, file)
}

fn fetch(
    repo: &str,
    kind: hf_hub::RepoType,
    revision: Option<&str>,
    file: &str,
) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::Repo;
    let revision = revision.unwrap_or("main").to_string();
    let repo_spec = Repo::with_revision(repo.to_string(), kind, revision.clone());
    // A cached file needs no network at all.
    let cache = hf_hub::Cache::from_env();
    if let Some(path) = cache.repo(repo_spec.clone()).get(file) {
        return Ok(path);
    }
    // Offline by request: fail now rather than after a network timeout.
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        return Err(anyhow!(
            "hub: '{file}' of '{repo}' (revision {revision}) is not in the Hugging Face cache and HF_HUB_OFFLINE is set. \
             Download the file elsewhere and give its local path in the configuration instead"
        ));
    }
    let api = ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| anyhow!("hub: cannot set up the Hugging Face client: {e}"))?;
    api.repo(repo_spec).get(file).map_err(|e| {
        anyhow!(
            "hub: could not fetch '{file}' of '{repo}' (revision {revision}) from the Hugging Face hub: {e}. \
             Without network access, download the file elsewhere and give its local path in the configuration instead"
        )
    })
}

//! Content digests of files: sha256, streamed. With the CPU's SHA extensions
//! sha2 hashes ~1.3-1.5 GB/s on the 2-core development machine (0.17-0.20 s
//! for the 253 MB model), faster than the disk delivers a cold file, so a
//! faster non-cryptographic hash would buy little.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// `sha256:<64 hex digits>` of a file's content.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex(&hasher.finalize())))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_file_is_the_standard_one() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

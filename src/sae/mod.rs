//! Sparse autoencoders: TopK, BatchTopK, Matryoshka BatchTopK and ReLU-L1
//! (trained here) and JumpReLU (read), their trainer and SAELens IO.
//!
//! Plain Rust over f32 slices (row-major `[n, d_in]` activations); nothing
//! here reads configuration files or knows which model produced the data.
//!
//! - [`SaeConfig`], [`SaeKind`], [`Sae`]: weights and inference
//!   ([`Sae::encode`] -> [`SparseCodes`], [`Sae::encode_topk`], [`Sae::decode`],
//!   [`Sae::reconstruct`]); [`Architecture`]: the kind as a plain tag
//!   (`topk`, `relu_l1`, `batchtopk`, `matryoshka`, `jumprelu`) shared by
//!   configuration, SAELens IO and reports.
//! - [`norm_scaling_factor`] / [`fold_scaling`]: train on `s x` with
//!   `E ||s x||^2 = 1`, then fold s so the saved SAE takes raw activations.
//! - [`Trainer`], [`TrainerConfig`], [`Ortho`], [`StepStats`] (and
//!   [`StepTimes`], each phase's time): the
//!   dictionary_learning / OpenAI TopK recipe with a hand-written
//!   forward/backward, the batch selection of the batch kinds
//!   (`batch_topk`) and their learned threshold, Matryoshka's nested prefix
//!   losses, uniform, sparsity-guided or OrtSAE's chunk-wise (`ortsae`)
//!   orthogonality, checkpoints.
//! - [`cofire`]: sparse co-firing counts `C_ij`, `n_i` and competition
//!   `c_ij = C_ij / min(n_i, n_j)`, per batch or streamed.
//! - [`save_saelens`] / [`load_saelens`]: SAELens folders (and Gemma
//!   Scope's own layout, read).

mod batch_topk;
mod buffers;
mod checkpoint;
pub mod cofire;
mod model;
mod ortho;
mod ortsae;
mod rows;
mod saelens;
mod topk;
mod train;

pub use model::{
    fold_scaling, geometric_median, norm_scaling_factor, Architecture, Sae, SaeConfig, SaeKind,
    SparseCodes,
};
pub use saelens::{load_saelens, save_saelens, SaelensMeta, CFG_FILE, WEIGHTS_FILE};
pub use train::{DecoderBias, DenseGrads, Ortho, StepStats, StepTimes, Trainer, TrainerConfig};

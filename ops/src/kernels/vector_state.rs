//! Clearing the upper halves of the CPU's vector registers after faer's
//! wide-vector GEMM, before scalar (SSE-encoded) code runs.
//!
//! faer's AVX-512/AVX2 matrix kernels can return with the upper bits of the
//! vector registers dirty. On x86-64 the rest of shoal is compiled for the
//! baseline (SSE2) target, and libm's `expf`/`tanhf` switch to VEX-encoded
//! code internally: with dirty upper state every such switch pays a state
//! transition penalty. Measured on the development machine: QRNN
//! fo-pooling over (32, 128, 64) took 250-400 ms after a GEMM and 30-50 ms
//! after a `vzeroupper`. So [`crate::kernels::matmul::gemm`] clears the
//! state on its thread (and on the rayon workers when it ran in parallel),
//! and the sequence kernels clear it at the start of each unit of work.
//! `vzeroupper` only touches bits 128 and up, which hold nothing live
//! in baseline-compiled code; results are unchanged.

/// Executes `vzeroupper` on this thread when the CPU has AVX (a no-op
/// elsewhere).
#[inline]
pub fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            #[allow(unsafe_code)]
            // SAFETY: `_mm256_zeroupper` requires AVX, detected just above.
            // It zeroes bits 128 and up of the vector registers; the compiler
            // knows the intrinsic clobbers them (it is an LLVM intrinsic, not
            // opaque assembly), so no live value is lost.
            unsafe {
                std::arch::x86_64::_mm256_zeroupper();
            }
        }
    }
}

/// [`clear_upper_vector_state`] on every thread of the current rayon pool
/// and on this one.
pub fn clear_upper_vector_state_everywhere() {
    rayon::broadcast(|_| clear_upper_vector_state());
    clear_upper_vector_state();
}

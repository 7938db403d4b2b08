#ifndef ZERO_SFT_COPENBLAS_SHIM_H
#define ZERO_SFT_COPENBLAS_SHIM_H
#include <cblas.h>

/// Threads OpenBLAS uses for one call (set from OPENBLAS_NUM_THREADS or openblas_set_num_threads).
static inline int zsft_blas_threads(void) { return openblas_get_num_threads(); }
static inline void zsft_blas_set_threads(int n) { openblas_set_num_threads(n); }
/// The kernel set OpenBLAS chose for this CPU (or OPENBLAS_CORETYPE), e.g. "Cooperlake".
static inline const char *zsft_blas_corename(void) { return openblas_get_corename(); }
#endif

#ifndef ZERO_SFT_CMPI_SHIM_H
#define ZERO_SFT_CMPI_SHIM_H
#include <mpi.h>

/* Open MPI's handles are macros over global symbols that Swift cannot import; these getters expose them. */
static inline MPI_Comm zsft_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype zsft_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype zsft_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype zsft_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype zsft_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype zsft_uint8(void) { return MPI_UINT8_T; }
static inline MPI_Op zsft_op_sum(void) { return MPI_SUM; }
static inline MPI_Op zsft_op_max(void) { return MPI_MAX; }
static inline MPI_Op zsft_op_min(void) { return MPI_MIN; }
static inline void *zsft_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Errhandler zsft_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline MPI_Request zsft_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *zsft_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline int zsft_success(void) { return MPI_SUCCESS; }
static inline int zsft_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int zsft_thread_single(void) { return MPI_THREAD_SINGLE; }
static inline int zsft_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
#endif

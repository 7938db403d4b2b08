#ifndef ZERO_SFT_CMPI_SHIM_H
#define ZERO_SFT_CMPI_SHIM_H
#include <mpi.h>
#include <stdio.h>

/* Open MPI's handles are macros over global symbols that Swift cannot import; these getters expose them. */
static inline MPI_Comm zsft_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype zsft_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype zsft_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype zsft_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype zsft_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype zsft_uint8(void) { return MPI_UINT8_T; }
static inline MPI_Datatype zsft_uint16(void) { return MPI_UINT16_T; }
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
static inline int zsft_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }
static inline MPI_Status *zsft_statuses_ignore(void) { return MPI_STATUSES_IGNORE; }
static inline int zsft_err_in_status(void) { return MPI_ERR_IN_STATUS; }
static inline int zsft_max_processor_name(void) { return MPI_MAX_PROCESSOR_NAME; }
static inline MPI_Datatype zsft_datatype_null(void) { return MPI_DATATYPE_NULL; }
static inline MPI_Comm zsft_comm_null(void) { return MPI_COMM_NULL; }

/* C's stdout is a global that Swift 6 will not touch from Swift; the runtime needs it line-buffered. */
static inline void zsft_make_stdout_line_buffered(void) { setvbuf(stdout, NULL, _IOLBF, 0); }
#endif

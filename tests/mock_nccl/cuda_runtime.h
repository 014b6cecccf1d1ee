/* tests/mock_nccl/cuda_runtime.h: the few CUDA runtime types and calls distill/dist.c uses, for
 * tests/test_distill_nccl_mock.c only (this folder goes first on the include path of that one
 * object). Streams and events are host objects of tests/mock_nccl/mock_nccl.c; the "GPU" work
 * is the CPU backend's, which is done by the time its call returns. */
#ifndef IV2_MOCK_CUDA_RUNTIME_H
#define IV2_MOCK_CUDA_RUNTIME_H

typedef enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidResourceHandle = 400 } cudaError_t;
typedef struct mock_cuda_stream *cudaStream_t;
typedef struct mock_cuda_event *cudaEvent_t;

#define cudaStreamNonBlocking 0x01
#define cudaEventDisableTiming 0x02

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags);
cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned int flags, int priority);
cudaError_t cudaDeviceGetStreamPriorityRange(int *least, int *greatest);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags);

#endif

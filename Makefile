# iv2: build, test and bench.  `make` builds the CPU tools into bin/;
# `make CUDA=1` adds the CUDA backend (kernels/) compiled with nvcc.
#
# Layout of sources (each folder one job, see docs/architecture.md):
#   common/*.c    -> build/libiv2.a      (shared: errors, logs, dtypes, safetensors,
#                                         manifest, cache format, compute interface + CPU impl, models)
#   extract/*.c   -> build/libextract.a  (decoder + extraction pipeline; the only FFmpeg user)
#   distill/*.c   -> build/libdistill.a  (trainer)
#   kernels/*.cu  -> build/libkernels.a  (CUDA backend, CUDA=1 only)
#   *_main.c      -> one tool each (see TOOLS below)
# Tests: tests/test_*.c are programs, tests/test_*.sh scripts; tests/run.sh runs them.

CC       ?= cc
NVCC     ?= nvcc
CUDA     ?= 0
FFMPEG   ?= 1
# 90a: Hopper's arch-specific code (wgmma) for H100/H200; 80 covers A100 and the other 8.x GPUs.
# CUDA_PTX: PTX the driver compiles for newer GPUs (Blackwell), without the Hopper-only kernels
CUDA_ARCH ?= 80 90a
CUDA_PTX  ?= 90
OPT      ?= -O3
CFLAGS   ?= $(OPT) -g -march=native
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -fopenmp -pthread -Icommon -Iextract -Idistill -Ikernels
LDFLAGS  += -fopenmp -pthread
SETUP    := common/install-deps.sh

# Install missing Debian packages before pkg-config is asked (SKIP_DEPS=1 to skip, e.g. on the GPU machine).
ifneq ($(SKIP_DEPS),1)
ifneq ($(MAKECMDGOALS),clean)
_deps := $(shell sh $(SETUP) >&2)
endif
endif

PKG_BASE := lmdb libcjson openblas
PKG_FF   := libavformat libavcodec libswscale libavutil
BASE_CFLAGS := $(shell pkg-config --cflags $(PKG_BASE) 2>/dev/null)
BASE_LIBS   := $(shell pkg-config --libs $(PKG_BASE) 2>/dev/null) -lm
FF_CFLAGS   := $(shell pkg-config --cflags $(PKG_FF) 2>/dev/null)
FF_LIBS     := $(shell pkg-config --libs $(PKG_FF) 2>/dev/null)
CFLAGS += $(BASE_CFLAGS)

ifeq ($(CUDA),1)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell which $(NVCC)))
CFLAGS    += -DIV2_CUDA -I$(CUDA_HOME)/include
NVFLAGS   ?= -O3 -std=c++17 -lineinfo -Icommon -Ikernels $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a)) \
             $(foreach a,$(CUDA_PTX),-gencode arch=compute_$(a),code=compute_$(a)) \
             $(if $(filter 90a,$(CUDA_ARCH)),-DIV2_WGMMA) -Xcompiler -fPIC,-Wall
# libkernels.a needs libiv2.a (errors, dtypes) again after it: static libraries link in order
CUDA_LIBS := build/libiv2.a -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/targets/x86_64-linux/lib -lcublasLt -lcublas -lcudart -lstdc++
KERN_LIB  := build/libkernels.a
endif

# MPI (data-parallel iv2-distill, distill/dist.c): on when ompi-c is found; MPI=0 forces it off.
MPI ?= $(shell pkg-config --exists ompi-c 2>/dev/null && echo 1 || echo 0)
ifeq ($(MPI),1)
CFLAGS    += -DIV2_MPI $(shell pkg-config --cflags ompi-c 2>/dev/null)
DIST_LIBS := $(shell pkg-config --libs ompi-c 2>/dev/null)
endif
# NCCL (gradient all-reduce on CUDA) with CUDA=1 when nccl.h is found
ifeq ($(CUDA),1)
ifneq ($(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h),)
CFLAGS    += -DIV2_NCCL
DIST_LIBS += -lnccl
endif
endif

COMMON_SRC  := $(filter-out %_main.c,$(wildcard common/*.c))
EXTRACT_SRC := $(filter-out %_main.c,$(wildcard extract/*.c))
DISTILL_SRC := $(filter-out %_main.c,$(wildcard distill/*.c))
KERN_SRC    := $(wildcard kernels/*.cu)
COMMON_OBJ  := $(COMMON_SRC:%.c=build/%.o)
EXTRACT_OBJ := $(EXTRACT_SRC:%.c=build/%.o)
DISTILL_OBJ := $(DISTILL_SRC:%.c=build/%.o)
KERN_OBJ    := $(KERN_SRC:%.cu=build/%.o)

# Objects depend on the flags they were built with: build/flags holds the last ones and changes
# (so everything is rebuilt) when they do, e.g. between `make` and `make CUDA=1` in one tree.
BUILD_FLAGS := $(CC) $(CFLAGS) $(FF_CFLAGS) $(if $(filter 1,$(CUDA)),$(NVCC) $(NVFLAGS))
ifneq ($(MAKECMDGOALS),clean)
_flags := $(shell mkdir -p build && printf '%s\n' '$(subst ','\'',$(BUILD_FLAGS))' > build/flags.new && \
            { cmp -s build/flags.new build/flags || cp build/flags.new build/flags; }; rm -f build/flags.new)
endif

LIBIV2 := build/libiv2.a $(KERN_LIB)
ALL_LIBS := $(BASE_LIBS) $(CUDA_LIBS)

# A tool is built once its main file exists.
TOOLS := $(if $(wildcard distill/distill_main.c),bin/iv2-distill) \
         $(if $(wildcard extract/cache_main.c),bin/iv2-cache) \
         $(if $(wildcard common/weights_main.c),bin/iv2-weights) \
         $(if $(wildcard manifests/manifest_main.c),bin/iv2-manifest)
ifeq ($(FFMPEG),1)
TOOLS += $(if $(wildcard extract/extract_main.c),bin/iv2-extract)
endif

TEST_C   := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_C:tests/%.c=build/tests/%)
ifneq ($(FFMPEG),1)
TEST_BIN := $(filter-out build/tests/test_decode% build/tests/test_extract%,$(TEST_BIN))
endif
# the tensor-core attention kernels and the norm / elementwise backward kernels, run on the CPU
# under an emulation of CUDA and their PTX (tests/emu/)
TEST_BIN += build/tests/test_attention_emu build/tests/test_wgmma_emu build/tests/test_kernels_emu
BENCH_C   := $(wildcard tests/bench/bench_*.c)
BENCH_BIN := $(BENCH_C:tests/bench/%.c=build/bench/%)
GPU_C     := $(wildcard tests/gpu/test_*.c)
GPU_BIN   := $(GPU_C:tests/gpu/%.c=build/gpu/%)
GPU_CU    := $(wildcard tests/gpu/test_*.cu)   # device-code probes, nvcc alone
GPU_BIN   += $(GPU_CU:tests/gpu/%.cu=build/gpu/%)

.PHONY: all deps test bench demo clean fuzz gpu-tests sanitize
all: $(TOOLS)

deps:
	@sh $(SETUP)

build/%.o: %.c $(wildcard common/*.h extract/*.h distill/*.h kernels/*.h) build/flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(if $(findstring extract/,$<),$(FF_CFLAGS)) -c $< -o $@

build/kernels/%.o: kernels/%.cu $(wildcard kernels/*.h kernels/*.cuh common/*.h) build/flags
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

build/libiv2.a: $(COMMON_OBJ)
	@mkdir -p build; rm -f $@; ar rcs $@ $^
build/libextract.a: $(EXTRACT_OBJ)
	@mkdir -p build; rm -f $@; ar rcs $@ $^
build/libdistill.a: $(DISTILL_OBJ)
	@mkdir -p build; rm -f $@; ar rcs $@ $^
build/libkernels.a: $(KERN_OBJ)
	@mkdir -p build; rm -f $@; ar rcs $@ $^

bin/iv2-extract: build/extract/extract_main.o build/libextract.a $(LIBIV2)
	@mkdir -p bin; $(CC) $(LDFLAGS) $^ -o $@ $(FF_LIBS) $(ALL_LIBS)
bin/iv2-cache: build/extract/cache_main.o $(LIBIV2)
	@mkdir -p bin; $(CC) $(LDFLAGS) $^ -o $@ $(ALL_LIBS)
bin/iv2-distill: build/distill/distill_main.o build/libdistill.a $(LIBIV2)
	@mkdir -p bin; $(CC) $(LDFLAGS) $^ -o $@ $(ALL_LIBS) $(DIST_LIBS)
bin/iv2-weights: build/common/weights_main.o $(LIBIV2)
	@mkdir -p bin; $(CC) $(LDFLAGS) $^ -o $@ $(ALL_LIBS)
bin/iv2-manifest: build/manifests/manifest_main.o $(LIBIV2)
	@mkdir -p bin; $(CC) $(LDFLAGS) $^ -o $@ $(ALL_LIBS)

# Test programs link everything (FFmpeg only when FFMPEG=1).
TEST_LIBS := build/libdistill.a $(if $(filter 1,$(FFMPEG)),build/libextract.a) $(LIBIV2)
build/tests/%: tests/%.c $(wildcard tests/*.h) $(TEST_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FF_CFLAGS) -Itests $< $(TEST_LIBS) -o $@ $(LDFLAGS) $(if $(filter 1,$(FFMPEG)),$(FF_LIBS)) $(ALL_LIBS) $(DIST_LIBS)
# EMU_OPT: make sanitize builds them with ASan and UBSan too (kernel indexing checked on the host)
EMU_OPT ?= -O2 -g
build/tests/test_attention_emu: tests/emu/test_attention_emu.cpp tests/emu/cuda_emu.h kernels/flash_attention.cuh
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 $(EMU_OPT) -Wall -Wno-unknown-pragmas -fno-strict-aliasing -Ikernels -Itests/emu $< -o $@ -lm
build/tests/test_kernels_emu: tests/emu/test_kernels_emu.cpp tests/emu/cuda_emu.h kernels/cuda_device.cuh \
                             kernels/norm.cuh kernels/elementwise.cuh common/compute.h
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 $(EMU_OPT) -Wall -Wno-unknown-pragmas -fno-strict-aliasing -Ikernels -Icommon -Itests/emu $< -o $@ -lm
build/tests/test_wgmma_emu: tests/emu/test_wgmma_emu.cpp tests/emu/cuda_emu.h
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 $(EMU_OPT) -Wall -Wno-unknown-pragmas -Itests/emu $< -o $@ -lm
build/bench/%: tests/bench/%.c $(TEST_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FF_CFLAGS) -Itests $< $(TEST_LIBS) -o $@ $(LDFLAGS) $(if $(filter 1,$(FFMPEG)),$(FF_LIBS)) $(ALL_LIBS) $(DIST_LIBS)
build/gpu/%: tests/gpu/%.cu $(wildcard kernels/*.cuh)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) $< -o $@
build/gpu/%: tests/gpu/%.c tests/testutil.h $(wildcard tests/gpu/*.h) $(TEST_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< $(TEST_LIBS) -o $@ $(LDFLAGS) $(ALL_LIBS) $(DIST_LIBS)

# dist.c's NCCL path on the CPU (tests/test_distill_nccl_mock.c): dist.c compiled with IV2_CUDA and
# IV2_NCCL against tests/mock_nccl/ (first on the include path of these objects only), linked into
# a test-only iv2-distill. Not with CUDA=1 (the real backend defines iv2_cuda_stream).
ifeq ($(MPI)$(CUDA),10)
MOCK_NCCL_H := tests/mock_nccl/nccl.h tests/mock_nccl/cuda_runtime.h $(wildcard common/*.h distill/*.h)
build/tests/mock_nccl/dist.o: distill/dist.c $(MOCK_NCCL_H)
	@mkdir -p $(dir $@)
	$(CC) -Itests/mock_nccl $(CFLAGS) -DIV2_CUDA -DIV2_NCCL -c $< -o $@
build/tests/mock_nccl/mock_nccl.o: tests/mock_nccl/mock_nccl.c $(MOCK_NCCL_H)
	@mkdir -p $(dir $@)
	$(CC) -Itests/mock_nccl $(CFLAGS) -c $< -o $@
build/tests/mock_nccl/iv2-distill: build/distill/distill_main.o build/tests/mock_nccl/dist.o build/tests/mock_nccl/mock_nccl.o build/libdistill.a $(LIBIV2)
	$(CC) $(LDFLAGS) -Wl,--wrap=iv2_dist_setup $^ -o $@ $(ALL_LIBS) $(DIST_LIBS)
build/tests/test_distill_nccl_mock: build/tests/mock_nccl/iv2-distill
endif

# the build runs silent (warnings and errors still show), so the output is the tests' lines
test:
	@$(MAKE) -s --no-print-directory all build/libiv2.a $(TEST_BIN) $(if $(filter 1,$(CUDA)),$(GPU_BIN))
	@sh tests/run.sh

bench: all $(BENCH_BIN)
	@sh tests/bench/run.sh

gpu-tests: all $(GPU_BIN)

demo: all
	@sh tests/demo.sh

# the test suite under ASan and UBSan, built apart in build/san/ (tests/sanitize.sh; ~25 min);
# SAN=thread: the threaded tests under TSan in build/tsan/
sanitize:
	@sh tests/sanitize.sh

fuzz: build/libiv2.a
	@sh tests/fuzz/build.sh

clean:
	rm -rf build bin

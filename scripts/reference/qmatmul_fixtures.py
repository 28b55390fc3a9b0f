"""Fixtures for the K-quant products in crates/ferroformer/src/nn/kernels/qmatmul/: what
llama.cpp's own CPU functions compute for the same weights and activations.

Calls ggml's C functions from llama-cpp-python's shared libraries (0.3.36, built with
-march=native on an AVX2/AVX-512 x86 machine) through ctypes, so the expected outputs are
llama.cpp's bits, not a re-implementation:

- weights: random f32 rows quantized by `ggml_quantize_chunk` (Q4_K, Q5_K, Q6_K, ...);
- activations: `quantize_row_q8_K` per row (what `ggml_compute_forward_mul_mat` does with
  fewer than 8 rows, where the tiled K-quant matmul does not take over);
- Q4_K: llama.cpp repacks Q4_K weights with a multiple of 8 rows on AVX2 CPUs (the
  default `use_extra_bufts`), so the products are `ggml_gemm_q4_K_8x8_q8_K` on groups of 4
  activation rows (`ggml_quantize_mat_q8_K_4x8`) and `ggml_gemv_q4_K_8x8_q8_K` on the rest,
  after the weight rows are interleaved as `make_block_q4_Kx8` does; `y` holds a 5-row
  product (rows 0..4 by gemm, row 4 by gemv), `y_single` each row alone (gemv);
- the other K-quants: `ggml_vec_dot_<type>_q8_K` per output.

Usage: /root/venvs/gguf/bin/python scripts/reference/qmatmul_fixtures.py
Writes tests/fixtures/gguf/qmatmul_kquants.json.
"""
import ctypes
import glob
import json
import os

import numpy as np
import llama_cpp

LIB = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
base = ctypes.CDLL(glob.glob(os.path.join(LIB, "libggml-base.so"))[0], mode=ctypes.RTLD_GLOBAL)
cpu = ctypes.CDLL(glob.glob(os.path.join(LIB, "libggml-cpu.so"))[0], mode=ctypes.RTLD_GLOBAL)
cpu.ggml_cpu_init()

QK_K = 256
Q8K_BYTES = 4 + QK_K + QK_K // 16 * 2
TYPES = {  # ggml_type id, block bytes
    "q2_k": (10, 84), "q3_k": (11, 110), "q4_k": (12, 144), "q5_k": (13, 176), "q6_k": (14, 210),
}
OUT = os.path.join(os.path.dirname(__file__), "../../tests/fixtures/gguf/qmatmul_kquants.json")

vp = ctypes.c_void_p
base.ggml_quantize_chunk.restype = ctypes.c_size_t
base.ggml_quantize_chunk.argtypes = [ctypes.c_int, vp, vp, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, vp]
cpu.quantize_row_q8_K.argtypes = [vp, vp, ctypes.c_int64]
cpu.ggml_quantize_mat_q8_K_4x8.argtypes = [vp, vp, ctypes.c_int64]
for f in ("ggml_gemv_q4_K_8x8_q8_K", "ggml_gemm_q4_K_8x8_q8_K"):
    getattr(cpu, f).argtypes = [ctypes.c_int, vp, ctypes.c_size_t, vp, vp, ctypes.c_int, ctypes.c_int]
for t in TYPES:
    f = getattr(cpu, f"ggml_vec_dot_{t[:2]}_K_q8_K")
    f.argtypes = [ctypes.c_int, vp, ctypes.c_size_t, vp, ctypes.c_size_t, vp, ctypes.c_size_t, ctypes.c_int]


def ptr(a):
    return a.ctypes.data_as(vp)


def quantize(tid, w):
    n, k = w.shape
    blk = TYPES_BY_ID[tid]
    out = np.zeros(n * (k // QK_K) * blk, dtype=np.uint8)
    got = base.ggml_quantize_chunk(tid, ptr(w), ptr(out), 0, n, k, None)
    assert got == out.size, (got, out.size)
    return out


TYPES_BY_ID = {v[0]: v[1] for v in TYPES.values()}


def q8k_row(x):
    y = np.zeros(len(x) // QK_K * Q8K_BYTES, dtype=np.uint8)
    cpu.quantize_row_q8_K(ptr(x), ptr(y), len(x))
    return y


def repack_q4_k(wq, n, k):
    """`make_block_q4_Kx8` with an interleave of 8 bytes, for every group of 8 rows."""
    nb = k // QK_K
    blocks = wq.reshape(n, nb, 144)
    out = []
    for g in range(n // 8):
        for b in range(nb):
            src = blocks[g * 8:(g + 1) * 8, b]
            d = src[:, 0:2].copy()
            dmin = src[:, 2:4].copy()
            sc = src[:, 4:16].astype(np.int32)
            qs = src[:, 16:144]
            oq = np.zeros(1024, dtype=np.uint8)
            for i in range(QK_K * 4 // 8):
                oq[i * 8:(i + 1) * 8] = qs[i % 8, (i // 8) * 8:(i // 8) * 8 + 8]
            os_ = np.zeros(96, dtype=np.int32)
            for half in range(2):
                for i in range(4):
                    if half == 0:
                        s = [sc[j, i] & 63 for j in range(8)]
                        m = [sc[j, i + 4] & 63 for j in range(8)]
                    else:
                        s = [((sc[j, i] & 192) >> 2) | (sc[j, i + 8] & 15) for j in range(8)]
                        m = [((sc[j, i + 4] & 192) >> 2) | ((sc[j, i + 8] & 240) >> 4) for j in range(8)]
                    o = i * 12 + 48 * half
                    for j in range(4):
                        os_[o + j] = (s[j] & 63) + ((s[j + 4] & 48) << 2)
                        os_[o + 4 + j] = (m[j] & 63) + ((m[j + 4] & 48) << 2)
                        os_[o + 8 + j] = (s[j + 4] & 15) + ((m[j + 4] & 15) << 4)
            out.append(np.concatenate([d.reshape(-1), dmin.reshape(-1), (os_ & 255).astype(np.uint8), oq]))
    return np.concatenate(out)


def products(name, wq, x, n, k):
    m = x.shape[0]
    tid, blk = TYPES[name]
    y = np.zeros((m, n), dtype=np.float32)
    if name == "q4_k":
        packed = repack_q4_k(wq, n, k)
        full = m - m % 4
        for r0 in range(0, full, 4):
            q = np.zeros(k // QK_K * Q8K_BYTES * 4, dtype=np.uint8)
            cpu.ggml_quantize_mat_q8_K_4x8(ptr(np.ascontiguousarray(x[r0:r0 + 4])), ptr(q), k)
            s = np.zeros((4, n), dtype=np.float32)
            cpu.ggml_gemm_q4_K_8x8_q8_K(k, ptr(s), n, ptr(packed), ptr(q), 4, n)
            y[r0:r0 + 4] = s
        for r in range(full, m):
            q = q8k_row(np.ascontiguousarray(x[r]))
            s = np.zeros(n, dtype=np.float32)
            cpu.ggml_gemv_q4_K_8x8_q8_K(k, ptr(s), n, ptr(packed), ptr(q), 1, n)
            y[r] = s
        # Every row alone (a decode step): gemv. It accumulates in f32 once per 256 values,
        # gemm once per 64, so the rows of a full group of 4 differ in the last bits.
        single = np.zeros((m, n), dtype=np.float32)
        for r in range(m):
            q = q8k_row(np.ascontiguousarray(x[r]))
            cpu.ggml_gemv_q4_K_8x8_q8_K(k, ptr(single[r]), n, ptr(packed), ptr(q), 1, n)
        return y, single
        return y
    dot = getattr(cpu, f"ggml_vec_dot_{name[:2]}_K_q8_K")
    row_bytes = k // QK_K * blk
    for r in range(m):
        q = q8k_row(np.ascontiguousarray(x[r]))
        for j in range(n):
            s = np.zeros(1, dtype=np.float32)
            wrow = wq[j * row_bytes:(j + 1) * row_bytes]
            dot(k, ptr(s), 0, ptr(wrow), 0, ptr(q), 0, 1)
            y[r, j] = s[0]
    return y, y


def main():
    rng = np.random.default_rng(12)
    n, k, m = 8, 512, 5
    result = {"source": {"llama_cpp_python": llama_cpp.__version__}, "n": n, "k": k, "m": m, "cases": {}}
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[:, ::37] *= 8.0  # a few outliers per block, as in real activations
    x[2, 256:512] = 0.0  # an all-zero activation block
    result["x"] = x.tobytes().hex()  # little-endian f32, row after row
    for name in ("q4_k", "q6_k", "q5_k", "q3_k", "q2_k"):
        w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        wq = quantize(TYPES[name][0], w)
        y, single = products(name, wq, x, n, k)
        result["cases"][name] = {
            "w": wq.tobytes().hex(),
            "y": y.tobytes().hex(),
        }
        if single is not y:
            result["cases"][name]["y_single"] = single.tobytes().hex()
        print(name, "max |y|", float(np.abs(y).max()))
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()

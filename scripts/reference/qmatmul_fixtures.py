"""Fixtures for the K-quant products in crates/ferroformer/src/nn/kernels/qmatmul/: what
llama.cpp's own CPU functions compute for the same weights and activations.

Calls ggml's C functions from llama-cpp-python's shared libraries (0.3.36, built with
-march=native on an AVX2/AVX-512 x86 machine) through ctypes, so the expected outputs are
llama.cpp's bits, not a re-implementation:

- weights: random f32 rows quantized by `ggml_quantize_chunk` (Q4_K, Q5_K, Q6_K, ...);
- activations: 9 rows of random f32, multiplied as one batch (`y`), the first 5 as one batch
  (`y_few`) and each row alone (`y_single`), since llama.cpp's order depends on the batch;
- Q4_K: llama.cpp repacks Q4_K weights with a multiple of 8 rows on AVX2 CPUs (the
  default `use_extra_bufts`), so the products are `ggml_gemm_q4_K_8x8_q8_K` on groups of 4
  activation rows (`ggml_quantize_mat_q8_K_4x8`) and `ggml_gemv_q4_K_8x8_q8_K` on the rest,
  after the weight rows are interleaved as `make_block_q4_Kx8` does;
- the other K-quants: `ggml_mul_mat` on a ggml CPU graph, which is `ggml_vec_dot_<type>_q8_K`
  per output below 8 rows (checked against direct calls) and the tiled K-quant matmul
  (ggml-cpu/tiled/) from 8 rows on.

Also (`repacked_main`, tests/fixtures/gguf/qmatmul_repacked.json): Q4_0 and Q2_K, which
llama.cpp repacks at load on this CPU (Q4_0 with AVX2, Q2_K with AVX-512; matrices of 8k
rows), so every product is `ggml_gemm_<type>_8x8_*` on the full groups of 4 activation rows
(`ggml_quantize_mat_q8_{0,K}_4x8`) and `ggml_gemv_<type>_8x8_*` on the rest
(`quantize_row_q8_{0,K}`), after the weights are interleaved as `make_block_q4_0x8` /
`make_block_q2_Kx8` do; batches of 1, 2, 4, 7, 8, 11 and 16 rows and each row alone.

Usage: /root/venvs/gguf/bin/python scripts/reference/qmatmul_fixtures.py
Writes tests/fixtures/gguf/qmatmul_kquants.json and tests/fixtures/gguf/qmatmul_repacked.json.
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
TYPES = {  # ggml_type id, block bytes (blocks of 256 values; Q5_1: of 32)
    "q2_k": (10, 84), "q3_k": (11, 110), "q4_k": (12, 144), "q5_k": (13, 176), "q6_k": (14, 210),
    "q5_1": (7, 24), "q4_0": (2, 18),
}
BLOCK_VALUES = {7: 32, 2: 32}
Q8_0_BYTES = 34
OUT = os.path.join(os.path.dirname(__file__), "../../tests/fixtures/gguf/qmatmul_kquants.json")

vp = ctypes.c_void_p
base.ggml_quantize_chunk.restype = ctypes.c_size_t
base.ggml_quantize_chunk.argtypes = [ctypes.c_int, vp, vp, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, vp]
cpu.quantize_row_q8_K.argtypes = [vp, vp, ctypes.c_int64]
cpu.ggml_quantize_mat_q8_K_4x8.argtypes = [vp, vp, ctypes.c_int64]
cpu.quantize_row_q8_0.argtypes = [vp, vp, ctypes.c_int64]
cpu.ggml_quantize_mat_q8_0_4x8.argtypes = [vp, vp, ctypes.c_int64]
for f in ("ggml_gemv_q4_K_8x8_q8_K", "ggml_gemm_q4_K_8x8_q8_K", "ggml_gemv_q4_0_8x8_q8_0",
          "ggml_gemm_q4_0_8x8_q8_0", "ggml_gemv_q2_K_8x8_q8_K", "ggml_gemm_q2_K_8x8_q8_K"):
    getattr(cpu, f).argtypes = [ctypes.c_int, vp, ctypes.c_size_t, vp, vp, ctypes.c_int, ctypes.c_int]
for t in [t for t in TYPES if t.endswith("_k")]:
    f = getattr(cpu, f"ggml_vec_dot_{t[:2]}_K_q8_K")
    f.argtypes = [ctypes.c_int, vp, ctypes.c_size_t, vp, ctypes.c_size_t, vp, ctypes.c_size_t, ctypes.c_int]


class InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", vp), ("no_alloc", ctypes.c_bool)]


base.ggml_init.restype = vp
base.ggml_init.argtypes = [InitParams]
base.ggml_new_tensor_2d.restype = vp
base.ggml_new_tensor_2d.argtypes = [vp, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
base.ggml_get_data.restype = vp
base.ggml_get_data.argtypes = [vp]
base.ggml_mul_mat.restype = vp
base.ggml_mul_mat.argtypes = [vp, vp, vp]
base.ggml_new_graph.restype = vp
base.ggml_new_graph.argtypes = [vp]
base.ggml_build_forward_expand.argtypes = [vp, vp]
base.ggml_free.argtypes = [vp]
cpu.ggml_graph_compute_with_ctx.argtypes = [vp, vp, ctypes.c_int]


def mul_mat(tid, wq, x, n, k):
    """llama.cpp's own `ggml_mul_mat` on a CPU graph (weights in a plain buffer, not
    repacked): `vec_dot` below 8 activation rows, the tiled K-quant matmul from 8 on."""
    m = x.shape[0]
    ctx = base.ggml_init(InitParams(64 << 20, None, False))
    w = base.ggml_new_tensor_2d(ctx, tid, k, n)
    a = base.ggml_new_tensor_2d(ctx, 0, k, m)
    ctypes.memmove(base.ggml_get_data(w), ptr(wq), wq.size)
    xs = np.ascontiguousarray(x, dtype=np.float32)
    ctypes.memmove(base.ggml_get_data(a), ptr(xs), xs.nbytes)
    y = base.ggml_mul_mat(ctx, w, a)
    g = base.ggml_new_graph(ctx)
    base.ggml_build_forward_expand(g, y)
    assert cpu.ggml_graph_compute_with_ctx(ctx, g, 2) == 0
    out = np.ctypeslib.as_array(ctypes.cast(base.ggml_get_data(y), ctypes.POINTER(ctypes.c_float)), (m, n)).copy()
    base.ggml_free(ctx)
    return out


def ptr(a):
    return a.ctypes.data_as(vp)


def quantize(tid, w):
    n, k = w.shape
    blk = TYPES_BY_ID[tid]
    out = np.zeros(n * (k // BLOCK_VALUES.get(tid, QK_K)) * blk, dtype=np.uint8)
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


def q4_k_batch(packed, x, n, k):
    """A batch of rows as llama.cpp multiplies repacked Q4_K: gemm on each full group of 4
    rows (`ggml_quantize_mat_q8_K_4x8` activations), gemv on the rest."""
    m = x.shape[0]
    y = np.zeros((m, n), dtype=np.float32)
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
    return y


def products(name, wq, x, n, k, few):
    """(all rows as one batch, the first `few` rows as one batch, each row alone)."""
    m = x.shape[0]
    tid, blk = TYPES[name]
    if name == "q4_k":
        packed = repack_q4_k(wq, n, k)
        batch = lambda xs: q4_k_batch(packed, xs, n, k)
    elif name == "q5_1":
        # No repacking, no tiled or llamafile path for Q5_1: ggml_vec_dot_q5_1_q8_1 always.
        batch = lambda xs: mul_mat(tid, wq, xs, n, k)
    else:
        batch = lambda xs: mul_mat(tid, wq, xs, n, k)
        # Below 8 rows the graph's product is ggml_vec_dot_<type>_q8_K, output for output.
        dot = getattr(cpu, f"ggml_vec_dot_{name[:2]}_K_q8_K")
        row_bytes = k // QK_K * blk
        direct = np.zeros((few, n), dtype=np.float32)
        for r in range(few):
            q = q8k_row(np.ascontiguousarray(x[r]))
            for j in range(n):
                wrow = wq[j * row_bytes:(j + 1) * row_bytes]
                dot(k, ptr(direct[r, j:]), 0, ptr(wrow), 0, ptr(q), 0, 1)
        assert (direct.view(np.uint32) == batch(x[:few]).view(np.uint32)).all(), name
    single = np.concatenate([batch(x[r:r + 1]) for r in range(m)])
    return batch(x), batch(x[:few]), single


def main():
    rng = np.random.default_rng(12)
    n, k, m, few = 8, 512, 9, 5
    result = {"source": {"llama_cpp_python": llama_cpp.__version__}, "n": n, "k": k, "m": m,
              "few": few, "cases": {}}
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[:, ::37] *= 8.0  # a few outliers per block, as in real activations
    x[2, 256:512] = 0.0  # an all-zero activation block
    result["x"] = x.tobytes().hex()  # little-endian f32, row after row
    for name in ("q4_k", "q6_k", "q5_k", "q3_k", "q2_k", "q5_1"):
        w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        wq = quantize(TYPES[name][0], w)
        y, y_few, single = products(name, wq, x, n, k, few)
        result["cases"][name] = {
            "w": wq.tobytes().hex(),
            "y": y.tobytes().hex(),
            "y_few": y_few.tobytes().hex(),
            "y_single": single.tobytes().hex(),
        }
        same = lambda a, b: int((a.view(np.uint32) == b.view(np.uint32)).sum())
        print(f"{name}: max |y| {float(np.abs(y).max()):.3f}; {m}-row batch equals rows alone at "
              f"{same(y, single)}/{y.size}, {few}-row batch at {same(y_few, single[:few])}/{y_few.size}")
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


def repack_q4_0(wq, n, k):
    """`make_block_q4_0x8` with an interleave of 8 bytes: per group of 8 rows and block, the
    8 f16 scales, then 8-byte pieces of the rows' nibbles in turn, each XORed with 0x88."""
    nb = k // 32
    blocks = wq.reshape(n, nb, 18)
    out = []
    for g in range(n // 8):
        for b in range(nb):
            src = blocks[g * 8:(g + 1) * 8, b]
            qs = np.zeros(128, dtype=np.uint8)
            for i in range(16):
                qs[i * 8:(i + 1) * 8] = src[i % 8, 2 + (i // 8) * 8:2 + (i // 8) * 8 + 8] ^ 0x88
            out.append(np.concatenate([src[:, 0:2].reshape(-1), qs]))
    return np.concatenate(out)


def repack_q2_k(wq, n, k):
    """`make_block_q2_Kx8`: per group of 8 rows and block, the 8 d, the 8 dmin, the scale
    bytes rearranged (byte i from row (i % 16) / 2, scale 2 (i / 16) + i % 2), then 8-byte
    pieces of the rows' 2-bit values in turn."""
    nb = k // QK_K
    blocks = wq.reshape(n, nb, 84)  # scales[16], qs[64], d, dmin
    out = []
    for g in range(n // 8):
        for b in range(nb):
            src = blocks[g * 8:(g + 1) * 8, b]
            scales = np.array([src[(i % 16) // 2, (i // 16) * 2 + i % 2] for i in range(128)],
                              dtype=np.uint8)
            qs = np.zeros(512, dtype=np.uint8)
            for i in range(64):
                qs[i * 8:(i + 1) * 8] = src[i % 8, 16 + (i // 8) * 8:16 + (i // 8) * 8 + 8]
            out.append(np.concatenate([src[:, 80:82].reshape(-1), src[:, 82:84].reshape(-1),
                                       scales, qs]))
    return np.concatenate(out)


def repacked_batch(name, packed, x, n, k):
    """A batch as llama.cpp's repacked `forward_mul_mat_one_chunk` multiplies it: gemm on the
    full groups of 4 rows (one call, activations quantized 4 rows at a time), gemv on each
    remaining row."""
    m = x.shape[0]
    if name == "q4_0":
        row_bytes = k // 32 * Q8_0_BYTES
        quant4, quant1 = cpu.ggml_quantize_mat_q8_0_4x8, cpu.quantize_row_q8_0
        gemm, gemv = cpu.ggml_gemm_q4_0_8x8_q8_0, cpu.ggml_gemv_q4_0_8x8_q8_0
    else:
        row_bytes = k // QK_K * Q8K_BYTES
        quant4, quant1 = cpu.ggml_quantize_mat_q8_K_4x8, cpu.quantize_row_q8_K
        gemm, gemv = cpu.ggml_gemm_q2_K_8x8_q8_K, cpu.ggml_gemv_q2_K_8x8_q8_K
    full = m - m % 4
    y = np.zeros((m, n), dtype=np.float32)
    q = np.zeros(row_bytes * m, dtype=np.uint8)
    xs = np.ascontiguousarray(x, dtype=np.float32)
    for r0 in range(0, full, 4):
        quant4(ptr(xs[r0:r0 + 4]), q[r0 * row_bytes:].ctypes.data_as(vp), k)
    for r in range(full, m):
        quant1(ptr(xs[r]), q[r * row_bytes:].ctypes.data_as(vp), k)
    if full:
        gemm(k, ptr(y), n, ptr(packed), ptr(q), full, n)
    for r in range(full, m):
        s = np.zeros(n, dtype=np.float32)
        gemv(k, ptr(s), n, ptr(packed), q[r * row_bytes:].ctypes.data_as(vp), 1, n)
        y[r] = s
    return y


REPACKED_OUT = os.path.join(os.path.dirname(__file__),
                            "../../tests/fixtures/gguf/qmatmul_repacked.json")


def repacked_main():
    # 24 weight rows: llama.cpp's AVX-512 gemm takes 16 columns at a time, its AVX2 code the
    # last 8; 16 activation rows: its 16-row gemm blocks and the 4-row ones.
    rng = np.random.default_rng(40)
    n, k, m = 24, 512, 16
    batches = [1, 2, 4, 7, 8, 11, 16]
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[:, ::37] *= 8.0
    x[5, 256:512] = 0.0
    result = {"source": {"llama_cpp_python": llama_cpp.__version__}, "n": n, "k": k, "m": m,
              "batches": batches, "x": x.tobytes().hex(), "cases": {}}
    for name in ("q4_0", "q2_k"):
        w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        wq = quantize(TYPES[name][0], w)
        packed = repack_q4_0(wq, n, k) if name == "q4_0" else repack_q2_k(wq, n, k)
        case = {"w": wq.tobytes().hex()}
        for b in batches:
            case[f"y{b}"] = repacked_batch(name, packed, x[:b], n, k).tobytes().hex()
        single = np.concatenate([repacked_batch(name, packed, x[r:r + 1], n, k) for r in range(m)])
        case["y_single"] = single.tobytes().hex()
        y16 = np.frombuffer(bytes.fromhex(case["y16"]), dtype=np.float32).reshape(m, n)
        same = int((y16.view(np.uint32) == single.view(np.uint32)).sum())
        print(f"{name}: max |y| {float(np.abs(y16).max()):.3f}; 16-row batch equals rows alone "
              f"at {same}/{y16.size}")
        result["cases"][name] = case
    with open(REPACKED_OUT, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", REPACKED_OUT, os.path.getsize(REPACKED_OUT), "bytes")


if __name__ == "__main__":
    main()
    repacked_main()

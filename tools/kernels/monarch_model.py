"""Numpy model of fftconv_monarch.cu's math (phases, factorisation, scaling, slot mapping): python3 tools/kernels/monarch_model.py.

Written before the kernel; its fp16-emulating error (5-6e-4) and exact mode (~2e-8, complex64 spectrum) are the
reference the GPU results were checked against (NOTES.md v8).
"""
import numpy as np

def W(n, e):  # exp(-2 pi i e / n)
    return np.exp(-2j * np.pi * np.asarray(e) / n)

def h16(z):  # fp16 rounding of real and imag parts (operands / smem storage)
    return z.real.astype(np.float16).astype(np.float64) + 1j * z.imag.astype(np.float16).astype(np.float64)

F16 = W(16, np.outer(np.arange(16), np.arange(16))) / 16
EXACT = False
def f16op(m): return m if EXACT else h16(m)

def logical(rho, r):
    s = r // 16
    return (rho % 16) * s + rho // 16 if r >= 16 else rho

def spectrum(taps, bias, N):
    r = N // 256
    n16 = 3 if r >= 16 else 2
    kf = np.fft.fft(taps, n=N) + bias
    kst = kf * 16.0 ** (2 * n16) / N
    # order [rho][lane][v]
    rho = np.arange(r)[:, None, None]; lane = np.arange(32)[None, :, None]; v = np.arange(8)[None, None, :]
    g, t = lane >> 2, lane & 3; jp, ci = v >> 2, v & 3
    k1p = g + 8 * (ci >> 1); dp = 8 * jp + 2 * t + (ci & 1)
    k = logical(rho, r) + r * (k1p + 16 * dp)
    out = kst[k]
    gain = np.abs(out).max()
    return out / gain, gain

def conv(x, taps, bias, N, fp16=True):
    rnd = h16 if fp16 else (lambda z: z)
    L = len(x); r = N // 256; s = r // 16 if r >= 16 else r
    spec, gain = spectrum(taps, bias, N)
    spec = spec.astype(np.complex64).astype(np.complex128)
    sigma = 2.0 ** (9 - np.ceil(np.log2(np.abs(np.concatenate([x.real, x.imag])).max())))
    xp = np.zeros(N, complex); xp[:L] = x
    X = xp.reshape(r, 256)  # X[p][q], n = 256 p + q
    slots = np.zeros((r, 256), complex)
    q = np.arange(256)
    if r >= 16:
        # P1: p = 16c + a; s-DFT over c; twiddle sigma W_r^{af}; slot 16f + a
        Xc = X.reshape(s, 16, 256)  # [c][a][q]
        Xf = np.einsum('cf,caq->faq', W(s, np.outer(np.arange(s), np.arange(s))), Xc)
        a = np.arange(16)
        # twiddle W_N^{f (256 a + q)} = W_r^{a f} W_N^{q f} (the f part of W_N^{q k1}, k1 = f + s e)
        y1 = rnd(sigma * W(N, np.arange(s)[:, None, None] * (256 * a[None, :, None] + q[None, None, :])) * Xf)
        # P2: e rows; MMA with F/16 (fp16 operands) then the e part of the twiddle, W_N^{q s e}
        y2 = np.einsum('ea,faq->feq', f16op(F16), y1)
        y2 = rnd(y2 * W(N, s * np.arange(16)[None, :, None] * q[None, None, :]))
        slots = y2.reshape(r, 256)  # slot 16 f + e
    else:
        Xf = np.einsum('cf,cq->fq', W(r, np.outer(np.arange(r), np.arange(r))), X)
        slots = rnd(sigma * Xf * W(N, np.arange(r)[:, None] * q[None, :]))
    # P3 rows
    out_slots = np.zeros_like(slots)
    k1pp = np.arange(16)
    T256 = W(256, np.outer(k1pp, np.arange(16)))  # [k1'][b']
    for rho in range(r):
        k1 = logical(rho, r)
        v = slots[rho].reshape(16, 16)  # [a'][b'], q = 16 a' + b'
        Y = f16op(F16) @ v  # [k1'][b']
        Y = rnd(Y * T256)
        Z = Y @ f16op(F16)  # [k1'][d']
        # spectrum: lane-ordered; map to (k1', d')
        sp = np.zeros((16, 16), complex)
        lane = np.arange(32)[:, None]; vv = np.arange(8)[None, :]
        g, t = lane >> 2, lane & 3; jp, ci = vv >> 2, vv & 3
        sp[g + 8 * (ci >> 1), 8 * jp + 2 * t + (ci & 1)] = spec[rho]
        P = rnd(Z * sp)
        UT = f16op(np.conj(F16)) @ P.T  # [b'][k1']
        UT = rnd(UT * np.conj(T256.T))
        yT = UT @ f16op(np.conj(F16))  # [b'][a']
        V = yT.T.reshape(256)  # q = 16 a' + b'
        # conj W_N^{q k1}: for r >= 16 only its e part, conj W_N^{q s e} (k1 = s e + f); the f part commutes with the
        # column mma over e and joins conj W_r^{a f} in the last phase
        out_slots[rho] = rnd(V * np.conj(W(N, (s * (rho % 16) if r >= 16 else k1) * q)))
    if r >= 16:
        V = out_slots.reshape(s, 16, 256)  # [f][e][q]
        T = np.einsum('ae,feq->faq', f16op(np.conj(F16)), V)
        T = rnd(T)
        # last phase: conj W_N^{f (256 a + q)} = conj W_r^{a f} conj W_N^{q f} (fp32), then the s-point DFT
        a = np.arange(16)
        T = T * np.conj(W(N, np.arange(s)[:, None, None] * (256 * a[None, :, None] + q[None, None, :])))
        out = np.einsum('cf,faq->caq', np.conj(W(s, np.outer(np.arange(s), np.arange(s)))), T)  # p = 16c + a
        y = out.reshape(N) * gain / sigma
    else:
        out = np.einsum('cf,fq->cq', np.conj(W(r, np.outer(np.arange(r), np.arange(r)))), out_slots)
        y = out.reshape(N) * gain / sigma
    return y[:L]

def ref(x, taps, bias):
    L = len(x)
    full = np.convolve(x, taps)[:L] + bias * x
    return full

rng = np.random.default_rng(0)
for L in [512, 700, 1024, 2048, 3000, 8192, 16384]:
    N = 1 << (2 * L - 1).bit_length()
    x = rng.standard_normal(L) + 1j * rng.standard_normal(L)
    taps = rng.standard_normal(L) / np.sqrt(L); bias = 0.7
    want = ref(x, taps, bias)
    for fp16 in (False, True):
        got = conv(x, taps, bias, N, fp16)
        print(L, N, fp16, np.linalg.norm(got - want) / np.linalg.norm(want))
EXACT = True
for L in [512, 700, 2048, 3000, 16384]:
    N = 1 << (2 * L - 1).bit_length()
    x = rng.standard_normal(L) + 1j * rng.standard_normal(L)
    taps = rng.standard_normal(L) / np.sqrt(L)
    want = ref(x, taps, 0.3)
    got = conv(x, taps, 0.3, N, False)
    print("exact", L, np.linalg.norm(got - want) / np.linalg.norm(want))

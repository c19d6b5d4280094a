"""A pool of torch.distributed worker processes for the sequence-parallel
tests: started once per (world size, backend), given one case at a time.

Each case is a dict; every rank builds the same whole-sequence inputs from
its seed, takes its shard, runs the parallel function, and gathers the
result; rank 0 also runs sageattn on the whole sequence on its device, and
sends everything back as float32 numpy arrays (bf16 has no numpy type;
float32 holds fp16 and bf16 exactly)."""

import os
import queue
import socket
import traceback

import torch

F16, BF16 = torch.float16, torch.bfloat16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inputs(case):
    """Whole-sequence q, k, v in the case's layout and dtype, on the CPU; k has
    a per-channel bias (what smoothing removes and the LSE must add back)."""
    g = torch.Generator().manual_seed(case["seed"])
    b, hq, hkv, d = case["b"], case["hq"], case.get("hkv", case["hq"]), case["d"]
    n, nkv = case["n"], case.get("nkv", case["n"])
    dtype = case.get("dtype", BF16)
    q = torch.randn((b, hq, n, d), generator=g)
    k = torch.randn((b, hkv, nkv, d), generator=g) + case.get("k_bias", 2.0) * torch.randn((1, 1, 1, d), generator=g)
    v = torch.randn((b, hkv, nkv, d), generator=g)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    if case.get("layout", "HND") == "NHD":
        q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    return q, k, v


def _shard(x, dim, rank, world, case, ulysses):
    from sageattention import parallel

    splits = case.get("splits")  # explicit contiguous shard lengths
    if splits is not None:
        start = sum(splits[:rank])
        return x.narrow(dim, start, splits[rank])
    sharding = case.get("sharding", "contiguous")
    return parallel.shard_sequence(x, dim, rank, world, sharding, ulysses)


def run_case(case, rank, world, device, groups):
    import sageattention
    from sageattention import parallel

    layout = case.get("layout", "HND")
    sd = 2 if layout == "HND" else 1
    causal = case.get("causal", False)
    sharding = case.get("sharding", "contiguous")
    kwargs = dict(case.get("kwargs", {}))
    fn = case["fn"]
    ulysses = case.get("ulysses", 1) if fn == "hybrid" else 1
    q, k, v = inputs(case)
    ql, kl, vl = (_shard(t, sd, rank, world, case, ulysses).to(device) for t in (q, k, v))
    if case.get("corrupt_k"):  # k and v of another head_dim than q, on every rank
        kl, vl = kl[..., :-1], vl[..., :-1]
    if case.get("requires_grad"):
        ql.requires_grad_(True)
    mode = case.get("all_to_all")  # None, "p2p" (forced), "missing" (a gloo build without all-to-all)
    real_all_to_all = parallel.dist.all_to_all_single
    if mode == "missing":

        def missing(*args, **kwargs):
            raise RuntimeError("ProcessGroupGloo does not support alltoall")

        parallel.dist.all_to_all_single = missing
    else:
        parallel._ALL_TO_ALL_MODE = mode
    try:
        if fn == "ulysses":
            out, lse = parallel.ulysses_attention(
                ql, kl, vl, tensor_layout=layout, is_causal=causal, return_lse=True, sharding=sharding, **kwargs
            )
        elif fn == "ring":
            out, lse = parallel.ring_attention(
                ql, kl, vl, tensor_layout=layout, is_causal=causal, return_lse=True, sharding=sharding, **kwargs
            )
        elif fn == "hybrid":
            if ulysses not in groups:
                groups[ulysses] = parallel.hybrid_groups(ulysses)
            ug, rg = groups[ulysses]
            out, lse = parallel.hybrid_attention(
                ql, kl, vl, ug, rg, tensor_layout=layout, is_causal=causal, return_lse=True, sharding=sharding, **kwargs
            )
        else:
            raise ValueError(f"unknown case fn {fn!r}")
    except Exception as e:  # the test decides whether it was expected
        if not case.get("expect_error"):
            raise
        return {"error": type(e).__name__, "message": str(e)}
    finally:
        parallel._ALL_TO_ALL_MODE = None
        parallel.dist.all_to_all_single = real_all_to_all
        parallel._NO_ALL_TO_ALL.clear()
    if case.get("expect_error"):
        return {"error": None, "message": "no exception"}
    assert out.shape == ql.shape and out.dtype == ql.dtype, (out.shape, ql.shape, out.dtype)
    hd = 1 if layout == "HND" else 2
    assert lse.shape == (ql.size(0), ql.size(hd), ql.size(sd)) and lse.dtype == torch.float32, lse.shape
    gather_sharding = "contiguous" if case.get("splits") else sharding
    full_out = parallel.gather_sequence(out, sd, sharding=gather_sharding, ulysses_size=ulysses)
    full_lse = parallel.gather_sequence(lse, 2, sharding=gather_sharding, ulysses_size=ulysses)
    if rank != 0:
        return None
    kwargs.pop("seq_lens", None)  # the parallel functions' own
    single_out, single_lse = sageattention.sageattn(
        q.to(device), k.to(device), v.to(device), tensor_layout=layout, is_causal=causal, return_lse=True, **kwargs
    )
    arrays = {"out": full_out, "lse": full_lse, "single_out": single_out, "single_lse": single_lse}
    return {name: t.detach().float().cpu().numpy() for name, t in arrays.items()}


def worker(rank, world, port, backend, tasks, results):
    import torch.distributed as dist

    torch.set_num_threads(1)
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    groups = {}
    parent = os.getppid()
    try:
        while True:
            try:
                case = tasks.get(timeout=5)
            except queue.Empty:
                if os.getppid() != parent:  # the test process is gone (killed): do not linger on the GPUs
                    break
                continue
            if case is None:
                break
            try:
                results.put((rank, "ok", run_case(case, rank, world, device, groups)))
            except BaseException:  # reported to the test process
                results.put((rank, "error", traceback.format_exc()))
    finally:
        dist.destroy_process_group()


class Pool:
    """`world` worker processes in one process group; run(case) returns rank
    0's payload, or raises with the workers' tracebacks."""

    def __init__(self, world, backend="gloo", timeout=120.0):
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.world, self.timeout, self.broken = world, timeout, False
        self.tasks = [ctx.Queue() for _ in range(world)]
        self.results = ctx.Queue()
        port = free_port()
        env = {"OMP_NUM_THREADS": "1", "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            self.procs = [
                ctx.Process(target=worker, args=(r, world, port, backend, self.tasks[r], self.results), daemon=True)
                for r in range(world)
            ]
            for p in self.procs:
                p.start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def run(self, case):
        if self.broken:
            raise RuntimeError("the worker pool is broken by an earlier case")
        for t in self.tasks:
            t.put(case)
        got, errors = {}, []
        for _ in range(self.world):
            try:
                rank, status, payload = self.results.get(timeout=self.timeout)
            except queue.Empty:
                self.broken = True
                raise TimeoutError(f"no answer from the workers within {self.timeout} s for {case}") from None
            if status == "error":
                errors.append(f"rank {rank}:\n{payload}")
            got[rank] = payload
        if errors:
            raise AssertionError("\n".join(errors))
        return got[0]

    def close(self):
        for t in self.tasks:
            try:
                t.put(None)
            except Exception:  # a queue already closed
                pass
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)

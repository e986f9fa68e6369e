//! The cubecl side of the health check: a tiled f32 matrix multiply and the
//! code that uploads its inputs, launches it, times it and reads it back.
//! Everything here is generic over the cubecl [`Runtime`], so the CUDA and
//! wgpu paths run exactly the same kernel.

use std::time::Instant;

use cubecl::prelude::*;
use cubecl::server::Handle;
use cubecl::std::tensor::TensorHandle;

/// Side of the square tile each cube computes. 16x16 = 256 units per cube
/// fits every runtime we target (CUDA allows 1024, WebGPU guarantees 256),
/// and two 16x16 f32 tiles take 2 KiB of shared memory.
pub(super) const TILE: u32 = 16;

/// `c = a * b` for row-major `n`x`n` matrices. Each cube computes one
/// `tile`x`tile` block of `c`; for each step along `k` its units copy one
/// tile of `a` and one of `b` into shared memory, wait for each other, and
/// accumulate from the shared copies, so every input element is read from
/// global memory once per cube instead of once per unit.
#[cube(launch)]
fn matmul_tiled(a: &Array<f32>, b: &Array<f32>, c: &mut Array<f32>, n: u32, #[comptime] tile: usize) {
    let n = n as usize;
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let row = CUBE_POS_Y as usize * tile + ty;
    let col = CUBE_POS_X as usize * tile + tx;

    let mut a_tile = SharedMemory::<f32>::new(tile * tile);
    let mut b_tile = SharedMemory::<f32>::new(tile * tile);
    let mut acc = 0.0f32;

    let steps = n.div_ceil(tile);
    for step in 0..steps {
        let a_col = step * tile + tx;
        let b_row = step * tile + ty;
        // Outside the matrix (the last tile when n is not a multiple of the
        // tile) the shared copy holds zeros, which add nothing to the sum.
        if row < n && a_col < n {
            a_tile[ty * tile + tx] = a[row * n + a_col];
        } else {
            a_tile[ty * tile + tx] = 0.0;
        }
        if b_row < n && col < n {
            b_tile[ty * tile + tx] = b[b_row * n + col];
        } else {
            b_tile[ty * tile + tx] = 0.0;
        }
        sync_cube();

        for k in 0..tile {
            acc += a_tile[ty * tile + k] * b_tile[k * tile + tx];
        }
        // The next step overwrites the tiles: nobody may still be reading.
        sync_cube();
    }

    if row < n && col < n {
        c[row * n + col] = acc;
    }
}

/// What one health-check run on a device produced.
pub(super) struct MatmulRun {
    /// The result matrix of the last run, read back from the device.
    pub result: Vec<f32>,
    /// Wall-clock seconds of each timed run (launch to completed sync).
    pub timings: Vec<f64>,
}

/// Uploads `a` and `b`, runs the kernel once to warm up (this compiles it)
/// and then `iterations` timed times, and reads the result back. Errors
/// are the runtime's own words; the caller adds which device it was.
pub(super) fn run_matmul<R: Runtime>(
    client: &ComputeClient<R>,
    a: &[f32],
    b: &[f32],
    n: u32,
    iterations: u32,
) -> Result<MatmulRun, String> {
    let len = n as usize * n as usize;
    debug_assert_eq!(a.len(), len);
    debug_assert_eq!(b.len(), len);

    let a_handle = client.create_from_slice(f32::as_bytes(a));
    let b_handle = client.create_from_slice(f32::as_bytes(b));
    let c_handle = client.empty(len * size_of::<f32>());

    let cubes = n.div_ceil(TILE);
    let launch = || {
        matmul_tiled::launch::<R>(
            client,
            CubeCount::Static(cubes, cubes, 1),
            CubeDim::new_2d(TILE, TILE),
            array_arg::<R>(&a_handle, len),
            array_arg::<R>(&b_handle, len),
            array_arg::<R>(&c_handle, len),
            n,
            TILE as usize,
        );
        cubecl::future::block_on(client.sync()).map_err(|e| server_error(&e))
    };

    launch()?;
    let mut timings = Vec::with_capacity(iterations as usize);
    for _ in 0..iterations {
        let start = Instant::now();
        launch()?;
        timings.push(start.elapsed().as_secs_f64());
    }

    let bytes = client.read_one(c_handle).map_err(|e| server_error(&e))?;
    // Decoded element by element rather than cast in place: the read-back
    // buffer carries no alignment guarantee for f32.
    let result: Vec<f32> =
        bytes.chunks_exact(size_of::<f32>()).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect();
    if result.len() != len {
        return Err(format!("read back {} values, expected {len}", result.len()));
    }
    Ok(MatmulRun { result, timings })
}

/// A kernel argument over a whole buffer of `len` f32 values. Going through
/// cubecl-std's contiguous tensor handle keeps this crate free of `unsafe`;
/// the length it promises is the one every buffer above was allocated with.
fn array_arg<R: Runtime>(handle: &Handle, len: usize) -> ArrayArg<R> {
    TensorHandle::<R>::new_contiguous(vec![len], handle.clone(), f32::cube_type()).binding().into_array_arg()
}

/// cubecl's server errors end in a multi-line backtrace; the report wants
/// only the cause.
fn server_error(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    let cause = text.split("\nBacktrace:").next().unwrap_or_default();
    cause.split_whitespace().collect::<Vec<_>>().join(" ")
}

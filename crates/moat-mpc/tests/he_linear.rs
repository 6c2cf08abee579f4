//! The homomorphic linear-layer protocol between two threads: every kind of linear layer of a
//! quantised model (convolutions with stride 1 and 2, padding, 1×1, 5×5, depthwise and grouped
//! convolutions, folded batch norm,
//! unfolded batch norm, average pooling, global average pooling, dense) must give shares that
//! add up to `QuantizedGraph::linear` exactly; malformed peer messages are errors.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use moat_mpc::he::{HeClient, HeParams, HeServer, LinearShape, ServerLayer, predicted_bytes, shape_of};
use moat_mpc::transport::tcp::TcpChannel;
use moat_mpc::transport::{Channel, ChannelConfig, memory};
use moat_mpc::{MpcError, Result};
use moat_nn::kernels::Window;
use moat_nn::zoo::GraphBuilder;
use moat_nn::{BatchNorm, Conv2d, FixedPoint, Graph, Op, Pool, QuantizedGraph, Tensor, ValueId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn nn(e: moat_nn::NnError) -> MpcError {
    MpcError::invalid("test model", e.to_string())
}

fn config() -> ChannelConfig {
    ChannelConfig::default().with_timeout(Duration::from_secs(120))
}

/// A model with every kind of linear layer.
fn model() -> std::result::Result<Graph, moat_nn::NnError> {
    let mut b = GraphBuilder::new(&[3, 12, 12], 5);
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let mut random_bn = |c: usize| BatchNorm {
        gamma: (0..c).map(|_| rng.random_range(0.5..1.5)).collect(),
        beta: (0..c).map(|_| rng.random_range(-0.5..0.5)).collect(),
        mean: (0..c).map(|_| rng.random_range(-0.2..0.2)).collect(),
        var: (0..c).map(|_| rng.random_range(0.5..2.0)).collect(),
        eps: 1e-5,
    };
    let c1 = b.conv("conv3x3", ValueId::INPUT, 8, 3, 1, 1)?;
    let c1 = b.push("conv3x3.bn", Op::BatchNorm(random_bn(8)), vec![c1])?; // folded
    let r1 = b.relu(c1)?;
    let bn = b.push("bn.unfolded", Op::BatchNorm(random_bn(8)), vec![r1])?; // stays: an affine map
    let c2 = b.conv("conv5x5.s2", bn, 6, 5, 2, 2)?;
    let c3 = b.conv("conv1x1", c2, 5, 1, 1, 0)?;
    let ap = b.push("avgpool2", Op::AvgPool(Pool { kernel: [2, 2], stride: [2, 2], padding: [0; 4] }), vec![c3])?;
    let c4 = b.conv("conv3x3.s2", ap, 4, 3, 2, 1)?;
    let weight: Vec<f32> = (0..4 * 4 * 2 * 3).map(|i| ((i * 37 % 11) as f32 - 5.0) / 8.0).collect();
    let asym = Conv2d {
        weight: Tensor::new(vec![4, 4, 2, 3], weight)?,
        bias: vec![0.25, -0.5, 0.0, 1.0],
        stride: [1, 2],
        padding: [1, 0, 0, 2],
        group: 1,
    };
    let c5 = b.push("conv2x3.asym", Op::Conv2d(asym), vec![c4])?;
    let dw = b.grouped_conv("depthwise3x3", c5, 4, 3, 1, 1, 4)?;
    let grouped = b.grouped_conv("group2.1x1", dw, 6, 1, 1, 0, 2)?;
    let ap2 =
        b.push("avgpool3.p1", Op::AvgPool(Pool { kernel: [3, 3], stride: [1, 1], padding: [1; 4] }), vec![grouped])?;
    let gap = b.global_avg_pool(ap2)?;
    let d = b.dense("fc", gap, 10)?;
    b.finish("he-layers", d)
}

/// Runs `server` here and `client` in a thread over an in-memory pair or TCP loopback.
fn run_pair<A, B: Send + 'static>(
    tcp: bool,
    server: impl FnOnce(&mut dyn Channel) -> Result<A>,
    client: impl FnOnce(&mut dyn Channel) -> Result<B> + Send + 'static,
) -> Result<(A, B)> {
    let io = |e: std::io::Error| MpcError::invalid("test socket", e.to_string());
    let (mut ch, handle): (Box<dyn Channel>, _) = if tcp {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        let handle = std::thread::spawn(move || client(&mut TcpChannel::connect(addr, config())?));
        (Box::new(TcpChannel::accept(&listener, config())?), handle)
    } else {
        let (a, mut b) = memory::pair(config());
        (Box::new(a), std::thread::spawn(move || client(&mut b)))
    };
    let a = server(&mut *ch);
    let b = handle.join().map_err(|_| MpcError::invalid("test", "client panicked"))?;
    Ok((a?, b?))
}

fn check_model(tcp: bool) -> Result<()> {
    let fp = FixedPoint::default();
    let params = HeParams::n4096(fp)?;
    let q = QuantizedGraph::new(&model().map_err(nn)?, fp).map_err(nn)?;
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let input: Vec<f32> = (0..3 * 12 * 12).map(|_| rng.random_range(-1.0..1.0)).collect();
    let values = q.run_all_encoded(q.encode_input(&input).map_err(nn)?).map_err(nn)?;

    // Per linear node: the input, its shares (random, and one at the share extremes).
    let mut cases = Vec::new();
    let mut kinds = Vec::new();
    for (index, node) in q.graph().nodes().iter().enumerate() {
        let Some(shape) = shape_of(&q, index)? else { continue };
        let x = &values[node.inputs[0].0];
        let x1: Vec<u64> = if cases.len() == 1 {
            vec![fp.mask(); x.len()]
        } else {
            x.iter().map(|_| fp.reduce(rng.random())).collect()
        };
        let x0: Vec<u64> = x.iter().zip(&x1).map(|(&v, &s)| fp.sub(v, s)).collect();
        let expected = q.linear(index, x, true).ok_or_else(|| MpcError::invalid("test", "not linear"))?;
        kinds.push(node.op.kind());
        cases.push((index, shape, x0, x1, expected));
    }
    assert_eq!(cases.len(), 12, "{kinds:?}");
    for kind in ["Conv2d", "BatchNorm", "AvgPool", "GlobalAvgPool", "Dense"] {
        assert!(kinds.contains(&kind), "model lacks a {kind}: {kinds:?}");
    }

    let layers = cases
        .iter()
        .map(|(index, ..)| ServerLayer::from_quantized(&params, &q, *index)?.ok_or_else(|| MpcError::invalid("t", "")))
        .collect::<Result<Vec<_>>>()?;
    let client_side: Vec<(LinearShape, Vec<u64>)> = cases.iter().map(|(_, s, _, x1, _)| (*s, x1.clone())).collect();
    let client_params = params.clone();
    let (y0s, y1s) = run_pair(
        tcp,
        |ch| {
            let mut server = HeServer::setup(&params, ch, 10)?;
            cases
                .iter()
                .zip(&layers)
                .map(|((_, _, x0, _, _), layer)| server.linear(ch, layer, x0))
                .collect::<Result<Vec<_>>>()
        },
        move |ch| {
            let mut client = HeClient::new(&client_params, 20)?;
            client.setup(ch)?;
            client_side
                .iter()
                .map(|(shape, x1)| {
                    let plan = client.params().plan(*shape)?;
                    client.linear(ch, &plan, x1)
                })
                .collect::<Result<Vec<_>>>()
        },
    )?;
    for (((index, shape, _, _, expected), y0), y1) in cases.iter().zip(&y0s).zip(&y1s) {
        let got: Vec<u64> = y0.iter().zip(y1).map(|(&a, &b)| fp.add(a, b)).collect();
        assert_eq!(&got, expected, "node {index} ({shape:?})");
        // The client's share alone is not the result.
        assert_ne!(y1, expected);
    }
    // The client's plans equal the server's (both derive them from the public shape).
    for (layer, (_, shape, ..)) in layers.iter().zip(&cases) {
        assert_eq!(layer.plan(), &params.plan(*shape)?);
    }
    Ok(())
}

#[test]
fn every_linear_layer_matches_the_quantized_graph() -> Result<()> {
    check_model(false)
}

#[test]
fn the_protocol_runs_over_tcp() -> Result<()> {
    check_model(true)
}

#[test]
fn extreme_weights_and_shares_through_the_protocol() -> Result<()> {
    let fp = FixedPoint::default();
    let params = HeParams::n4096(fp)?;
    let big = 1i64 << (fp.frac_bits() + 4);
    let window = Window { in_hw: [10, 10], kernel: [3, 3], stride: [1, 1], padding: [1; 4] };
    let shape = LinearShape::Conv2d { in_channels: 16, out_channels: 3, window };
    let weights: Vec<u64> =
        (0..shape.weight_len()).map(|i| fp.from_signed(if i % 3 == 0 { -big } else { big })).collect();
    let bias = vec![fp.from_signed(-7); shape.output_len()];
    let layer = ServerLayer::new(&params, shape, weights, bias)?;
    assert!(layer.flood_security() >= 40.0);
    let x1 = vec![fp.mask(); shape.input_len()];
    let x0 = vec![fp.mask(); shape.input_len()];
    let x: Vec<u64> = x0.iter().zip(&x1).map(|(&a, &b)| fp.add(a, b)).collect();
    let expected = layer.apply_with_bias(&x)?;
    let plan = layer.plan().clone();
    let client_params = params.clone();
    let (y0, y1) = run_pair(
        false,
        |ch| HeServer::setup(&params, ch, 1)?.linear(ch, &layer, &x0),
        move |ch| {
            let mut c = HeClient::new(&client_params, 2)?;
            c.setup(ch)?;
            c.linear(ch, &plan, &x1)
        },
    )?;
    let got: Vec<u64> = y0.iter().zip(&y1).map(|(&a, &b)| fp.add(a, b)).collect();
    assert_eq!(got, expected);
    Ok(())
}

#[test]
fn weights_beyond_the_flooding_margin_are_refused() -> Result<()> {
    let fp = FixedPoint::default();
    let params = HeParams::n4096(fp)?;
    let shape = LinearShape::Dense { inputs: 4096, outputs: 64 };
    // Weights of 2^30: the product noise could not be hidden by 2^68 of flooding.
    let weights = vec![fp.from_signed(1 << 30); shape.weight_len()];
    assert!(ServerLayer::new(&params, shape, weights, vec![0; 64]).is_err());
    Ok(())
}

#[test]
fn malformed_peer_messages_are_errors() -> Result<()> {
    let fp = FixedPoint::default();
    let params = HeParams::n4096(fp)?;
    let shape = LinearShape::Dense { inputs: 20, outputs: 3 };
    let layer = ServerLayer::new(&params, shape, vec![1; 60], vec![0; 3])?;
    let plan = layer.plan().clone();

    // A query of the wrong length.
    let result = run_pair(false, |ch| HeServer::setup(&params, ch, 1)?.linear(ch, &layer, &[0; 20]), {
        let params = params.clone();
        move |ch| {
            HeClient::new(&params, 2)?.setup(ch)?;
            Ok(ch.send(&[1, 2, 3])?)
        }
    });
    assert!(matches!(result, Err(MpcError::PeerMisbehaved { .. })), "{result:?}");

    // A public key of the wrong length.
    let result = run_pair(false, |ch| HeServer::setup(&params, ch, 1).map(|_| ()), |ch| Ok(ch.send(&[0; 10])?));
    assert!(matches!(result, Err(MpcError::PeerMisbehaved { .. })), "{result:?}");

    // A truncated response.
    let result = run_pair(
        false,
        |ch| {
            let _pk = ch.recv()?;
            let _query = ch.recv()?;
            ch.send(&[0; 5])?;
            Ok(())
        },
        {
            let params = params.clone();
            move |ch| {
                let mut c = HeClient::new(&params, 2)?;
                c.setup(ch)?;
                c.linear(ch, &plan, &[0; 20])
            }
        },
    );
    assert!(matches!(result, Err(MpcError::PeerMisbehaved { .. })), "{result:?}");
    Ok(())
}

/// The benchmark layers of issue 4 over TCP loopback; run with
/// `cargo test --release -p moat-mpc --test he_linear bench -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn bench_cheetah_layers() -> Result<()> {
    let fp = FixedPoint::default();
    let params = HeParams::n4096(fp)?;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let conv = LinearShape::Conv2d {
        in_channels: 64,
        out_channels: 64,
        window: Window { in_hw: [32, 32], kernel: [3, 3], stride: [1, 1], padding: [1; 4] },
    };
    let fc = LinearShape::Dense { inputs: 2048, outputs: 1000 };
    for (name, shape, cheetah) in
        [("conv3x3 32x32x64->64", conv, "0.17 s, 3.6 MiB"), ("fc 2048->1000", fc, "0.15 s, 1.95 MiB")]
    {
        // He-normal-like weights at scale 2^12.
        let fan_in = shape.weight_len() / (shape.output_len() / if name.starts_with("conv") { 1024 } else { 1 });
        let std = (2.0 / fan_in as f64).sqrt();
        let weights: Vec<u64> = (0..shape.weight_len()).map(|_| fp.encode(rng.random_range(-1.7..1.7) * std)).collect();
        let mut layer = ServerLayer::new(&params, shape, weights, vec![0; shape.output_len()])?;
        let x0: Vec<u64> = (0..shape.input_len()).map(|_| fp.reduce(rng.random())).collect();
        let x1: Vec<u64> = (0..shape.input_len()).map(|_| fp.reduce(rng.random())).collect();
        let x: Vec<u64> = x0.iter().zip(&x1).map(|(&a, &b)| fp.add(a, b)).collect();
        let expected = layer.apply_with_bias(&x)?;
        for prepared in [false, true] {
            if prepared {
                let start = Instant::now();
                layer.prepare(&params)?;
                println!(
                    "  prepare: {:.3} s, {:.1} MiB of weight polynomials",
                    start.elapsed().as_secs_f64(),
                    layer.prepared_bytes() as f64 / (1u64 << 20) as f64
                );
            }
            let plan = layer.plan().clone();
            let client_params = params.clone();
            let (predicted_up, predicted_down) = predicted_bytes(&params, &plan);
            let x1 = x1.clone();
            let ((y0, server_stats), (y1, client_time)) = run_pair(
                true,
                |ch| {
                    let mut server = HeServer::setup(&params, ch, 3)?;
                    ch.stats_mut().reset();
                    let y0 = server.linear(ch, &layer, &x0)?;
                    Ok((y0, ch.stats().total()))
                },
                move |ch| {
                    let mut client = HeClient::new(&client_params, 4)?;
                    client.setup(ch)?;
                    // Let the server reset its counters before the layer starts.
                    std::thread::sleep(Duration::from_millis(50));
                    let start = Instant::now();
                    let y1 = client.linear(ch, &plan, &x1)?;
                    Ok((y1, start.elapsed()))
                },
            )?;
            let got: Vec<u64> = y0.iter().zip(&y1).map(|(&a, &b)| fp.add(a, b)).collect();
            assert_eq!(got, expected);
            let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
            println!(
                "{name}{}: {:.3} s; client→server {:.2} MiB (predicted {:.2}), server→client {:.2} MiB (predicted \
                 {:.2}), total {:.2} MiB; {} query + {} response ciphertexts, {} products; flood security {:.1} bits; \
                 Cheetah: {cheetah}",
                if prepared { " (weights prepared)" } else { "" },
                client_time.as_secs_f64(),
                mib(server_stats.bytes_received),
                mib(predicted_up as u64),
                mib(server_stats.bytes_sent),
                mib(predicted_down as u64),
                mib(server_stats.bytes_total()),
                plan_summary(&layer).0,
                plan_summary(&layer).1,
                plan_summary(&layer).2,
                layer.flood_security(),
            );
        }
    }
    Ok(())
}

fn plan_summary(layer: &ServerLayer) -> (usize, usize, usize) {
    (layer.plan().input_polys(), layer.plan().output_polys(), layer.plan().products())
}

/// All linear layers of ResNet-18 (CIFAR-10, 32×32 input) over TCP loopback, one session, in
/// sequence as in an inference; run with
/// `cargo test --release -p moat-mpc --test he_linear bench_resnet18 -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn bench_resnet18_linear_layers() -> Result<()> {
    let fp = FixedPoint::default();
    let params = HeParams::n4096(fp)?;
    let graph = moat_nn::zoo::build(&moat_nn::zoo::Architecture::ResNet { depth: 18, width: 1.0 }, &[3, 32, 32], 10, 1)
        .map_err(nn)?;
    let q = QuantizedGraph::new(&graph, fp).map_err(nn)?;
    let start = Instant::now();
    let layers = (0..q.graph().nodes().len())
        .filter_map(|i| ServerLayer::from_quantized(&params, &q, i).transpose())
        .collect::<Result<Vec<_>>>()?;
    let weight_polys: usize = layers.iter().map(|l| l.plan().weight_polys()).sum();
    println!(
        "{} linear layers, plans + flooding checks in {:.2} s; {weight_polys} weight polynomials ({:.0} MiB if prepared)",
        layers.len(),
        start.elapsed().as_secs_f64(),
        (weight_polys * params.degree() * 8 * params.moduli().len()) as f64 / (1u64 << 20) as f64,
    );
    let (mut up, mut down) = (0, 0);
    for layer in &layers {
        let (u, d) = predicted_bytes(&params, layer.plan());
        up += u;
        down += d;
    }
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let x0s: Vec<Vec<u64>> =
        layers.iter().map(|l| (0..l.plan().shape().input_len()).map(|_| fp.reduce(rng.random())).collect()).collect();
    let x1s = x0s.clone();
    let plans: Vec<_> = layers.iter().map(|l| l.plan().clone()).collect();
    let client_params = params.clone();
    let ((_, stats), (_, elapsed)) = run_pair(
        true,
        |ch| {
            let mut server = HeServer::setup(&params, ch, 3)?;
            let ys = layers.iter().zip(&x0s).map(|(l, x0)| server.linear(ch, l, x0)).collect::<Result<Vec<_>>>()?;
            Ok((ys, ch.stats().total()))
        },
        move |ch| {
            let start = Instant::now();
            let mut client = HeClient::new(&client_params, 4)?;
            client.setup(ch)?;
            let ys = plans.iter().zip(&x1s).map(|(p, x1)| client.linear(ch, p, x1)).collect::<Result<Vec<_>>>()?;
            Ok((ys, start.elapsed()))
        },
    )?;
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    println!(
        "ResNet-18 linear layers: {:.2} s; client→server {:.1} MiB, server→client {:.1} MiB, total {:.1} MiB \
         (predicted {:.1} + {:.1} MiB + key)",
        elapsed.as_secs_f64(),
        mib(stats.bytes_received),
        mib(stats.bytes_sent),
        mib(stats.bytes_total()),
        mib(up as u64),
        mib(down as u64),
    );
    Ok(())
}

#[test]
fn layers_refuse_parameters_they_were_not_built_for() -> Result<()> {
    let fp = FixedPoint::default();
    let params = HeParams::n4096(fp)?;
    let shape = LinearShape::Dense { inputs: 8, outputs: 2 };
    let mut layer = ServerLayer::new(&params, shape, vec![1; 16], vec![0; 2])?;
    assert!(layer.prepare(&HeParams::n8192(fp)?).is_err());
    layer.prepare(&params)?;
    assert_eq!(layer.prepared_bytes(), layer.plan().weight_polys() * 4096 * 8 * 2);
    Ok(())
}

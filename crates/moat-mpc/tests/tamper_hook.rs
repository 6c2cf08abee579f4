//! The client's tamper hook in the *real* ReLU protocol behaves exactly as in the simulated
//! backend: an offset `δ` added to the client's pre-activation share shifts the ReLU input that
//! the protocol reconstructs by exactly `δ`, the behaviour sees the same sites, and the output
//! is the plaintext ReLU of the shifted input (truncated when the layer rescales, plus any
//! post-activation offset).

mod common;

use std::sync::{Arc, Mutex};

use common::{NETS, Net, run_protocol, share};
use moat_mpc::engine::layer::{LayerSite, max_pool_layer, relu_layer};
use moat_mpc::engine::simulated::Trace;
use moat_mpc::engine::{FnBehaviour, Honest, RescalePlan, Reveal, ShareSite, SimulatedEngine, TamperPoint};
use moat_mpc::protocols::Config;
use moat_mpc::protocols::maxpool::MaxTree;
use moat_mpc::{AShare, MpcError, Result, reconstruct};
use moat_nn::graph::ValueId;
use moat_nn::{FixedPoint, OpKind, QuantizedGraph, zoo};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// What a behaviour saw: `(point, node, name, op, shape, frac_bits)`.
type Seen = (TamperPoint, usize, String, OpKind, Vec<usize>, u32);

fn model() -> Result<Arc<QuantizedGraph>> {
    let arch: zoo::Architecture = "lenet5".parse().map_err(|e| MpcError::invalid("test", format!("{e:?}")))?;
    let graph = zoo::build(&arch, &[1, 28, 28], 10, 11).map_err(|e| MpcError::invalid("test", e.to_string()))?;
    Ok(Arc::new(
        QuantizedGraph::new(&graph, FixedPoint::default()).map_err(|e| MpcError::invalid("test", e.to_string()))?,
    ))
}

/// The SEEK-style behaviour: `+δ` at one position of one node's pre-activation share, `+ε` at
/// another position of its post-activation share; records every site it is called at.
fn behaviour(
    node: usize,
    delta: u64,
    eps: u64,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> FnBehaviour<impl FnMut(&ShareSite<'_>, &mut [u64])> {
    FnBehaviour(move |site: &ShareSite<'_>, share: &mut [u64]| {
        if site.node == node
            && let Ok(mut s) = seen.lock()
        {
            s.push((site.point, site.node, site.name.to_string(), site.op, site.shape.to_vec(), site.frac_bits));
        }
        if site.node == node && site.point == TamperPoint::PreActivation {
            share[17] = share[17].wrapping_add(delta);
        }
        if site.node == node && site.point == TamperPoint::PostActivation {
            share[5] = share[5].wrapping_add(eps);
        }
    })
}

#[test]
fn pre_activation_offset_matches_the_simulated_backend() -> Result<()> {
    let q = model()?;
    let fp = q.fixed();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let input: Vec<f32> = (0..784).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let x = q.encode_input(&input).map_err(|e| MpcError::invalid("test", e.to_string()))?;

    // Simulated backend: the honest pre-activation of the first ReLU, then a tampered run.
    let mut honest = Trace::default();
    SimulatedEngine::new(Arc::clone(&q), 1).infer_encoded(x.clone(), Reveal::Label, &mut Honest, Some(&mut honest))?;
    let (node, honest_pre) = honest.pre_activation[0].clone();
    let graph = q.graph();
    assert_eq!(graph.nodes()[node].op.kind(), "Relu");
    let delta = fp.encode(-3.25);
    let eps = fp.encode(0.5);
    let sim_seen = Arc::new(Mutex::new(Vec::new()));
    let mut tampered = Trace::default();
    SimulatedEngine::new(Arc::clone(&q), 2).infer_encoded(
        x,
        Reveal::Label,
        &mut behaviour(node, delta, eps, Arc::clone(&sim_seen)),
        Some(&mut tampered),
    )?;
    let sim_pre = tampered.pre_activation[0].1.clone();
    assert_eq!(fp.sub(sim_pre[17], honest_pre[17]), delta);

    // Real protocol: the same layer on fresh shares of the honest pre-activation.
    let name = graph.nodes()[node].name.clone();
    let in_shape = graph.shape(graph.nodes()[node].inputs[0]).to_vec();
    let out_shape = graph.shape(ValueId::of_node(node)).to_vec();
    // The scales of the fused walk: the first ReLU reads a conv whose truncation it performs.
    let plan = RescalePlan::fused(graph);
    let f = fp.frac_bits();
    let (in_bits, out_bits) =
        (plan.frac_bits(graph.nodes()[node].inputs[0], f), plan.frac_bits(ValueId::of_node(node), f));
    assert_eq!((in_bits, out_bits), (2 * f, f));
    for net in NETS {
        let (x0, x1) = share(fp, &honest_pre, 40 + net as u64);
        let real_seen = Arc::new(Mutex::new(Vec::new()));
        // The client's share as the protocol consumed it (recorded by a wrapping behaviour).
        let consumed = Arc::new(Mutex::new(Vec::new()));
        let (seen, used) = (Arc::clone(&real_seen), Arc::clone(&consumed));
        let (name0, in0, out0) = (name.clone(), in_shape.clone(), out_shape.clone());
        let (name1, in1, out1) = (name.clone(), in_shape.clone(), out_shape.clone());
        let (r0, r1) = run_protocol(
            net,
            fp,
            Config::default(),
            3,
            move |s, ch| {
                let site = LayerSite {
                    node,
                    name: &name0,
                    input_shape: &in0,
                    output_shape: &out0,
                    input_frac_bits: in_bits,
                    output_frac_bits: out_bits,
                };
                relu_layer(s, ch, &x0, &site, &mut Honest)
            },
            move |s, ch| {
                let site = LayerSite {
                    node,
                    name: &name1,
                    input_shape: &in1,
                    output_shape: &out1,
                    input_frac_bits: in_bits,
                    output_frac_bits: out_bits,
                };
                let mut inner = behaviour(node, delta, eps, seen);
                let mut recording = FnBehaviour(|site: &ShareSite<'_>, share: &mut [u64]| {
                    use moat_mpc::engine::ClientBehaviour;
                    inner.tamper(site, share);
                    if site.point == TamperPoint::PreActivation
                        && let Ok(mut u) = used.lock()
                    {
                        *u = share.to_vec();
                    }
                });
                relu_layer(s, ch, &x1, &site, &mut recording)
            },
        )?;
        let x0 = share(fp, &honest_pre, 40 + net as u64).0;
        let used = consumed.lock().map(|u| u.clone()).unwrap_or_default();
        let real_pre = reconstruct(&x0, &AShare::from_wrapping(fp, used))?;
        assert_eq!(real_pre, sim_pre, "{net:?}: the protocol's ReLU input is the simulated one");
        assert_eq!(fp.sub(real_pre[17], honest_pre[17]), delta);
        assert!(real_pre.iter().zip(&honest_pre).enumerate().all(|(i, (a, b))| i == 17 || a == b));
        // Output: ReLU of the shifted input, truncated to f, plus ε where the post-activation
        // share was moved.
        let y = reconstruct(&r0.out, &r1.out)?;
        let mut want: Vec<u64> = sim_pre.iter().map(|&v| if fp.is_negative(v) { 0 } else { fp.truncate(v) }).collect();
        want[5] = fp.add(want[5], eps);
        assert_eq!(y, want, "{net:?}");
        // The behaviour saw the same sites, in the same order, in both backends.
        let real = real_seen.lock().map(|s| s.clone()).unwrap_or_default();
        let sim = sim_seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(real.len(), 2);
        assert_eq!(real, sim, "{net:?}");
    }
    Ok(())
}

#[test]
fn honest_client_leaves_the_layer_unchanged_and_the_server_has_no_hook() -> Result<()> {
    let fp = FixedPoint::default();
    let x = common::values_with_edges(fp, 300, 1);
    let (x0, x1) = share(fp, &x, 2);
    let site_shape = [300usize];
    let (r0, r1) = run_protocol(
        Net::Memory,
        fp,
        Config::default(),
        4,
        move |s, ch| {
            let site = flat_site("relu", &site_shape, 12, 12);
            // The server's behaviour argument is ignored: only the client holds a hook.
            let mut would_tamper =
                FnBehaviour(|_: &ShareSite<'_>, share: &mut [u64]| share[0] = share[0].wrapping_add(999));
            relu_layer(s, ch, &x0, &site, &mut would_tamper)
        },
        move |s, ch| {
            let site = flat_site("relu", &site_shape, 12, 12);
            relu_layer(s, ch, &x1, &site, &mut Honest)
        },
    )?;
    let want: Vec<u64> = x.iter().map(|&v| if fp.is_negative(v) { 0 } else { v }).collect();
    assert_eq!(reconstruct(&r0.out, &r1.out)?, want);
    Ok(())
}

#[test]
fn layers_refuse_scales_they_cannot_produce() -> Result<()> {
    let fp = FixedPoint::default();
    let (x0, x1) = share(fp, &common::values_with_edges(fp, 8, 1), 2);
    let shape = [8usize];
    let site = |input_frac_bits, output_frac_bits| flat_site("layer", &shape, input_frac_bits, output_frac_bits);
    let (r0, r1) = run_protocol(
        Net::Memory,
        fp,
        Config::default(),
        6,
        move |s, ch| {
            let up = relu_layer(s, ch, &x0, &site(12, 24), &mut Honest).is_err();
            let tree = MaxTree::new(&[vec![0, 1]], 8)?;
            let pool = max_pool_layer(s, ch, &x0, &tree, &site(24, 12), &mut Honest).is_err();
            Ok((up, pool, ch.stats().total().bytes_sent))
        },
        move |_s, _ch| Ok(x1),
    )?;
    let (up, pool, sent) = r0.out;
    assert!(up && pool);
    assert_eq!(sent, 0, "refused before any message");
    drop(r1);
    Ok(())
}

/// Node 0 of a layer whose input and output have the same shape.
fn flat_site<'a>(name: &'a str, shape: &'a [usize], input_frac_bits: u32, output_frac_bits: u32) -> LayerSite<'a> {
    LayerSite { node: 0, name, input_shape: shape, output_shape: shape, input_frac_bits, output_frac_bits }
}

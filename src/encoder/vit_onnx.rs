//! Reads the weights of a CLIP ViT image tower out of its ONNX graph, for the native
//! forward pass ([`super::vit`]).
//!
//! The graph is recognised by its structure, not by tensor names (exporters rename and
//! deduplicate initializers freely): in node order, one patch-embedding `Conv`, the class
//! and position embeddings, `2·L + 2` `LayerNormalization`s, `6·L + 1` linear layers
//! (q, k, v, out, fc1, fc2 per layer, then the projection) as `MatMul` with a constant
//! weight or `MatMulInteger` with constant int8 weights and per-column scales, QuickGELU,
//! and `L` softmaxes. Anything else is reported as [`NotRecognised`] and the caller keeps
//! the generic tract path, so an unknown graph is never run by a guess.

use std::collections::HashMap;
use std::path::Path;

use tract_onnx::pb::{GraphProto, NodeProto};
use tract_onnx::prelude::*;

/// Why a graph is not run natively (the generic path runs it instead).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not a CLIP ViT image tower the native path knows: {0}")]
pub struct NotRecognised(pub String);

fn nr(msg: impl Into<String>) -> NotRecognised {
    NotRecognised(msg.into())
}

/// Weights of a linear layer `y = x·W + b`, W row-major `[k][n]`.
#[derive(Debug, Clone)]
pub enum LinearWeights {
    /// fp32 weights.
    F32 {
        /// `[k][n]`.
        w: Vec<f32>,
        /// Rows of W.
        k: usize,
        /// Columns of W.
        n: usize,
        /// `n` values.
        bias: Option<Vec<f32>>,
    },
    /// int8 weights, symmetric per output column, with int8 activations quantised per row.
    I8 {
        /// `[k][n]`.
        w: Vec<i8>,
        /// Rows of W.
        k: usize,
        /// Columns of W.
        n: usize,
        /// `n` per-column scales.
        scales: Vec<f32>,
        /// `n` values.
        bias: Option<Vec<f32>>,
    },
}

impl LinearWeights {
    /// `(k, n)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            LinearWeights::F32 { k, n, .. } | LinearWeights::I8 { k, n, .. } => (*k, *n),
        }
    }
}

/// A LayerNorm's parameters.
#[derive(Debug, Clone)]
pub struct NormWeights {
    /// γ.
    pub gamma: Vec<f32>,
    /// β.
    pub beta: Vec<f32>,
    /// ε.
    pub eps: f32,
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct BlockWeights {
    /// LayerNorm before attention.
    pub ln1: NormWeights,
    /// Query projection.
    pub q: LinearWeights,
    /// Key projection.
    pub k: LinearWeights,
    /// Value projection.
    pub v: LinearWeights,
    /// Attention output projection.
    pub out: LinearWeights,
    /// LayerNorm before the MLP.
    pub ln2: NormWeights,
    /// MLP up projection.
    pub fc1: LinearWeights,
    /// MLP down projection.
    pub fc2: LinearWeights,
}

/// Everything the native forward pass needs.
#[derive(Debug, Clone)]
pub struct VitWeights {
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch: usize,
    /// Model width D.
    pub width: usize,
    /// Attention heads.
    pub heads: usize,
    /// Scale applied to q·kᵀ before the softmax.
    pub attn_scale: f32,
    /// Patch embedding as a linear layer: `[3·P·P][D]`, rows in (channel, y, x) order.
    pub patch_w: Vec<f32>,
    /// Patch embedding bias, if the Conv has one.
    pub patch_b: Option<Vec<f32>>,
    /// `[D]`.
    pub class_emb: Vec<f32>,
    /// `[1 + patches][D]`.
    pub pos_emb: Vec<f32>,
    /// LayerNorm after the embeddings.
    pub pre_ln: NormWeights,
    /// The transformer blocks.
    pub blocks: Vec<BlockWeights>,
    /// LayerNorm of the class token.
    pub post_ln: NormWeights,
    /// `[D][E]` projection into the joint space.
    pub proj: LinearWeights,
}

impl VitWeights {
    /// Tokens per image: the class token and the patches.
    pub fn tokens(&self) -> usize {
        1 + (self.image_size / self.patch).pow(2)
    }

    /// Output (embedding) width E.
    pub fn embed_dim(&self) -> usize {
        self.proj.shape().1
    }

    /// Whether any linear layer is int8.
    pub fn is_int8(&self) -> bool {
        self.blocks
            .iter()
            .any(|b| matches!(b.q, LinearWeights::I8 { .. }))
    }
}

/// Constant values of the graph (initializers, `Constant` nodes, `Identity` of either).
struct Consts<'a> {
    protos: HashMap<&'a str, &'a tract_onnx::pb::TensorProto>,
    alias: HashMap<&'a str, &'a str>,
    dir: Option<String>,
    onnx: &'a tract_onnx::Onnx,
}

impl<'a> Consts<'a> {
    fn get(&self, name: &str) -> Option<Tensor> {
        let name = self.alias.get(name).copied().unwrap_or(name);
        let proto = self.protos.get(name)?;
        tract_onnx::tensor::load_tensor(&*self.onnx.provider, proto, self.dir.as_deref()).ok()
    }

    fn has(&self, name: &str) -> bool {
        let name = self.alias.get(name).copied().unwrap_or(name);
        self.protos.contains_key(name)
    }
}

fn values<T: Datum + Copy>(t: &Tensor) -> Result<Vec<T>, NotRecognised> {
    let t = t
        .cast_to::<T>()
        .map_err(|e| nr(format!("constant of type {:?}: {e}", t.datum_type())))?;
    // A plain (contiguous) tensor as one slice copy: iterating an ndarray view element by
    // element took a third of the load time (profiled).
    let plain = t
        .try_as_plain_ram()
        .map_err(|e| nr(format!("constant: {e}")))?;
    let slice = plain
        .as_slice::<T>()
        .map_err(|e| nr(format!("constant: {e}")))?;
    Ok(slice.to_vec())
}

fn scalar_f32(t: &Tensor) -> Option<f32> {
    (t.len() == 1)
        .then(|| values::<f32>(t).ok())
        .flatten()
        .and_then(|v| v.first().copied())
}

/// The graph with its wiring indexed.
struct Wiring<'a> {
    g: &'a GraphProto,
    consts: Consts<'a>,
    consumers: HashMap<&'a str, Vec<usize>>,
    producer: HashMap<&'a str, usize>,
}

impl<'a> Wiring<'a> {
    fn new(g: &'a GraphProto, onnx: &'a tract_onnx::Onnx, dir: Option<String>) -> Wiring<'a> {
        let mut protos: HashMap<&str, &tract_onnx::pb::TensorProto> =
            g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut alias = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut producer = HashMap::new();
        for (ix, n) in g.node.iter().enumerate() {
            if n.op_type == "Constant" {
                if let (Some(out), Some(t)) = (
                    n.output.first(),
                    n.attribute
                        .iter()
                        .find(|a| a.name == "value")
                        .and_then(|a| a.t.as_ref()),
                ) {
                    protos.insert(out.as_str(), t);
                }
            }
            for i in &n.input {
                consumers.entry(i.as_str()).or_default().push(ix);
            }
            for o in &n.output {
                producer.insert(o.as_str(), ix);
            }
        }
        for n in &g.node {
            if n.op_type == "Identity" {
                if let (Some(i), Some(o)) = (n.input.first(), n.output.first()) {
                    if protos.contains_key(i.as_str()) {
                        alias.insert(o.as_str(), i.as_str());
                    }
                }
            }
        }
        Wiring {
            g,
            consts: Consts {
                protos,
                alias,
                dir,
                onnx,
            },
            consumers,
            producer,
        }
    }

    fn node(&self, ix: usize) -> &'a NodeProto {
        &self.g.node[ix]
    }

    /// The nodes reading `value`, skipping `Identity` hops.
    fn readers(&self, value: &str) -> Vec<&'a NodeProto> {
        let mut out = Vec::new();
        for &ix in self.consumers.get(value).map(Vec::as_slice).unwrap_or(&[]) {
            let n = self.node(ix);
            if n.op_type == "Identity" {
                if let Some(o) = n.output.first() {
                    out.extend(self.readers(o));
                }
            } else {
                out.push(n);
            }
        }
        out
    }

    /// The only reader of `value`, if there is exactly one.
    fn only_reader(&self, value: &str) -> Option<&'a NodeProto> {
        let r = self.readers(value);
        (r.len() == 1).then(|| r[0])
    }

    /// The constant among a binary node's inputs and the name of the other input.
    fn const_operand(&self, n: &'a NodeProto) -> Option<(Tensor, &'a str)> {
        if n.input.len() != 2 {
            return None;
        }
        let (a, b) = (n.input[0].as_str(), n.input[1].as_str());
        if self.consts.has(b) && !self.consts.has(a) {
            Some((self.consts.get(b)?, a))
        } else if self.consts.has(a) && !self.consts.has(b) {
            Some((self.consts.get(a)?, b))
        } else {
            None
        }
    }

    /// If `value` is read only by an `Add` of a constant vector of `n`, that bias and the
    /// `Add`'s output.
    fn bias_after(
        &self,
        value: &'a str,
        n: usize,
    ) -> Result<(Option<Vec<f32>>, &'a str), NotRecognised> {
        if let Some(add) = self.only_reader(value).filter(|r| r.op_type == "Add") {
            if let Some((t, _)) = self.const_operand(add) {
                if t.len() == n {
                    let out = add.output.first().ok_or_else(|| nr("Add without output"))?;
                    return Ok((Some(values::<f32>(&t)?), out.as_str()));
                }
            }
        }
        Ok((None, value))
    }

    fn linear_f32(&self, n: &'a NodeProto) -> Result<Option<LinearWeights>, NotRecognised> {
        let Some(w) = n.input.get(1).filter(|b| self.consts.has(b)) else {
            return Ok(None);
        };
        let t = self
            .consts
            .get(w)
            .ok_or_else(|| nr(format!("weight {w}")))?;
        if t.rank() != 2 {
            return Ok(None);
        }
        let (k, cols) = (t.shape()[0], t.shape()[1]);
        let out = n
            .output
            .first()
            .ok_or_else(|| nr("MatMul without output"))?;
        let (bias, _) = self.bias_after(out, cols)?;
        Ok(Some(LinearWeights::F32 {
            w: values::<f32>(&t)?,
            k,
            n: cols,
            bias,
        }))
    }

    fn linear_i8(&self, n: &'a NodeProto) -> Result<LinearWeights, NotRecognised> {
        let name = &n.name;
        let w = n
            .input
            .get(1)
            .filter(|b| self.consts.has(b))
            .ok_or_else(|| nr(format!("{name}: MatMulInteger without constant weights")))?;
        let t = self
            .consts
            .get(w)
            .ok_or_else(|| nr(format!("weight {w}")))?;
        if t.rank() != 2 || t.datum_type() != i8::datum_type() {
            return Err(nr(format!("{name}: weights are not a 2-D int8 matrix")));
        }
        let (k, cols) = (t.shape()[0], t.shape()[1]);
        // Symmetric int8 on both sides: no activation zero point, and a zero (or absent)
        // weight zero point. uint8 activations with a zero point are a different scheme.
        if n.input.get(2).is_some_and(|z| !z.is_empty()) {
            return Err(nr(format!(
                "{name}: activations with a zero point (not symmetric int8)"
            )));
        }
        if let Some(z) = n.input.get(3).filter(|z| !z.is_empty()) {
            let zt = self
                .consts
                .get(z)
                .ok_or_else(|| nr(format!("{name}: weight zero point")))?;
            if values::<i32>(&zt)?.iter().any(|&v| v != 0) {
                return Err(nr(format!("{name}: non-zero weight zero point")));
            }
        }
        let act = n
            .input
            .first()
            .ok_or_else(|| nr("MatMulInteger without input"))?;
        let from = self.producer.get(act.as_str()).map(|&ix| self.node(ix));
        let int8_cast = from.is_some_and(|p| {
            p.op_type == "Cast"
                && p.attribute.iter().any(|a| {
                    a.name == "to"
                        && a.i == i64::from(tract_onnx::pb::tensor_proto::DataType::Int8 as i32)
                })
        });
        if !int8_cast {
            return Err(nr(format!(
                "{name}: activations are not quantised to int8 in the graph"
            )));
        }
        // out → Cast(float) → Mul(·, act_scale × w_scale): w_scale is the constant of n
        // values inside the scale product.
        let out = n
            .output
            .first()
            .ok_or_else(|| nr("MatMulInteger without output"))?;
        let cast = self
            .only_reader(out)
            .filter(|c| c.op_type == "Cast")
            .ok_or_else(|| nr(format!("{name}: result is not cast to float")))?;
        let cast_out = cast
            .output
            .first()
            .ok_or_else(|| nr("Cast without output"))?;
        let mul = self
            .only_reader(cast_out)
            .filter(|m| m.op_type == "Mul")
            .ok_or_else(|| nr(format!("{name}: result is not rescaled")))?;
        let scale_in = mul
            .input
            .iter()
            .find(|i| *i != cast_out)
            .ok_or_else(|| nr(format!("{name}: rescale without scale")))?;
        let scale_node = self
            .producer
            .get(scale_in.as_str())
            .map(|&ix| self.node(ix))
            .filter(|p| p.op_type == "Mul")
            .ok_or_else(|| nr(format!("{name}: scale is not activation × weight scales")))?;
        let (ws, _) = self
            .const_operand(scale_node)
            .filter(|(t, _)| t.len() == cols)
            .ok_or_else(|| nr(format!("{name}: no per-column weight scales")))?;
        let mul_out = mul.output.first().ok_or_else(|| nr("Mul without output"))?;
        let (bias, _) = self.bias_after(mul_out, cols)?;
        Ok(LinearWeights::I8 {
            w: values::<i8>(&t)?,
            k,
            n: cols,
            scales: values::<f32>(&ws)?,
            bias,
        })
    }
}

/// Reads the ViT weights from `path`; `image_size` is the bundle's input side.
pub fn load(path: &Path, image_size: usize) -> Result<VitWeights, NotRecognised> {
    let onnx = tract_onnx::onnx();
    let proto = onnx
        .proto_model_for_path(path)
        .map_err(|e| nr(format!("cannot read {}: {e:#}", path.display())))?;
    let g = proto
        .graph
        .as_ref()
        .ok_or_else(|| nr("model without a graph"))?;
    let dir = path.parent().map(|d| d.display().to_string());
    extract(&Wiring::new(g, &onnx, dir), image_size)
}

fn norm(w: &Wiring, n: &NodeProto) -> Result<NormWeights, NotRecognised> {
    let get = |ix: usize| -> Result<Vec<f32>, NotRecognised> {
        let name = n
            .input
            .get(ix)
            .ok_or_else(|| nr("LayerNormalization without scale/bias"))?;
        values::<f32>(
            &w.consts
                .get(name)
                .ok_or_else(|| nr("LayerNormalization with computed scale/bias"))?,
        )
    };
    let axis = n
        .attribute
        .iter()
        .find(|a| a.name == "axis")
        .map_or(-1, |a| a.i);
    if axis != -1 && axis != 2 {
        return Err(nr(format!("LayerNormalization over axis {axis}")));
    }
    Ok(NormWeights {
        gamma: get(1)?,
        beta: get(2)?,
        eps: n
            .attribute
            .iter()
            .find(|a| a.name == "epsilon")
            .map_or(1e-5, |a| a.f),
    })
}

fn extract(w: &Wiring, image_size: usize) -> Result<VitWeights, NotRecognised> {
    let mut conv = None;
    let mut norms = Vec::new();
    let mut linears = Vec::new();
    let mut softmaxes = 0;
    let mut quick_gelu = 0;
    let mut attn_scale = None;
    let mut head_dim = None;
    // Nodes that may hold the class embedding (Expand/Concat) or the position embedding
    // (Gather/Add of a constant table); which constant is which is decided by shape once the
    // Conv has given the width, so no size threshold assumes a wide model.
    let mut class_sites = Vec::new();
    let mut pos_sites = Vec::new();
    let mut class_pooled = false;
    for n in &w.g.node {
        match n.op_type.as_str() {
            "Constant" | "Identity" | "Cast" | "Reshape" | "Transpose" | "Add" | "Shape"
            | "Gather" | "Slice" | "Concat" | "Equal" | "Where" | "Expand" | "ConstantOfShape"
            | "Abs" | "ReduceMax" | "Max" | "Div" | "Round" | "Clip" | "Mul" | "Unsqueeze"
            | "Squeeze" => {}
            "Conv" => {
                if conv.is_some() {
                    return Err(nr("more than one Conv"));
                }
                conv = Some(n);
            }
            "LayerNormalization" => norms.push(norm(w, n)?),
            "MatMulInteger" => linears.push(w.linear_i8(n)?),
            "MatMul" => match w.linear_f32(n)? {
                Some(l) => linears.push(l),
                None => {
                    // q·kᵀ (then scaled) or attention·v.
                    if let Some(out) = n.output.first() {
                        if let Some(m) = w
                            .only_reader(out)
                            .filter(|r| r.op_type == "Mul" || r.op_type == "Div")
                        {
                            if let Some(s) = w.const_operand(m).and_then(|(t, _)| scalar_f32(&t)) {
                                let s = if m.op_type == "Div" { 1.0 / s } else { s };
                                if attn_scale.is_some_and(|a: f32| a != s) {
                                    return Err(nr("attention scale differs between layers"));
                                }
                                attn_scale = Some(s);
                            }
                        }
                    }
                }
            },
            "Softmax" => softmaxes += 1,
            "Sigmoid" => {
                let from = n
                    .input
                    .first()
                    .and_then(|i| w.producer.get(i.as_str()))
                    .map(|&ix| w.node(ix));
                let c = from
                    .filter(|p| p.op_type == "Mul")
                    .and_then(|p| w.const_operand(p))
                    .and_then(|(t, _)| scalar_f32(&t));
                if c.is_some_and(|c| (c - 1.702).abs() < 1e-4) {
                    quick_gelu += 1;
                } else {
                    return Err(nr("a Sigmoid that is not QuickGELU"));
                }
            }
            other => return Err(nr(format!("operator {other} ({})", n.name))),
        }
        // Head size: the last dimension q/k/v are reshaped to, [1, T, H or -1, head].
        if n.op_type == "Reshape" && head_dim.is_none() {
            if let Some(t) = n.input.get(1).and_then(|s| w.consts.get(s)) {
                if let Ok(s) = values::<i64>(&t) {
                    if s.len() == 4 {
                        head_dim = s.last().copied().filter(|&d| d > 0);
                    }
                }
            }
        }
        if matches!(n.op_type.as_str(), "Expand" | "Concat") {
            class_sites.push(n);
        }
        if matches!(n.op_type.as_str(), "Gather" | "Add")
            && n.input.first().is_some_and(|i| w.consts.has(i))
        {
            pos_sites.push(n);
        }
        // The pooled output is the class token: a Gather of index 0 on the token axis.
        if n.op_type == "Gather" && n.input.first().is_some_and(|i| !w.consts.has(i)) {
            let index = n
                .input
                .get(1)
                .and_then(|i| w.consts.get(i))
                .map(|t| values::<i64>(&t));
            let axis = n
                .attribute
                .iter()
                .find(|a| a.name == "axis")
                .map_or(0, |a| a.i);
            if !(matches!(index, Some(Ok(ref v)) if v.as_slice() == [0]) && axis == 1) {
                return Err(nr("a Gather other than the class token"));
            }
            class_pooled = true;
        }
    }
    if !class_pooled {
        return Err(nr("the output is not pooled from the class token"));
    }
    let conv = conv.ok_or_else(|| nr("no patch-embedding Conv"))?;
    let cw = conv
        .input
        .get(1)
        .and_then(|i| w.consts.get(i))
        .ok_or_else(|| nr("Conv with computed weights"))?;
    if cw.rank() != 4 || cw.shape()[1] != 3 || cw.shape()[2] != cw.shape()[3] {
        return Err(nr(format!("patch Conv weights of shape {:?}", cw.shape())));
    }
    let (width, patch) = (cw.shape()[0], cw.shape()[2]);
    let strides = conv
        .attribute
        .iter()
        .find(|a| a.name == "strides")
        .map(|a| a.ints.clone());
    if strides.is_some_and(|s| s.iter().any(|&x| x as usize != patch)) {
        return Err(nr("patch Conv stride differs from its kernel"));
    }
    if !image_size.is_multiple_of(patch) {
        return Err(nr(format!(
            "image size {image_size} is not a multiple of the patch {patch}"
        )));
    }
    let patch_b = match conv.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => Some(values::<f32>(
            &w.consts
                .get(b)
                .ok_or_else(|| nr("Conv with computed bias"))?,
        )?),
        None => None,
    };
    // Conv weights [D][3·P·P] → linear [3·P·P][D].
    let cwv = values::<f32>(&cw)?;
    let kk = 3 * patch * patch;
    let mut patch_w = vec![0f32; kk * width];
    for d in 0..width {
        for r in 0..kk {
            patch_w[r * width + d] = cwv[d * kk + r];
        }
    }

    let layers = softmaxes;
    if layers == 0 || norms.len() != 2 * layers + 2 || linears.len() != 6 * layers + 1 {
        return Err(nr(format!(
            "{softmaxes} attention softmaxes, {} LayerNorms, {} linear layers (want L, 2L+2, 6L+1)",
            norms.len(),
            linears.len()
        )));
    }
    if quick_gelu != layers {
        return Err(nr(format!(
            "{quick_gelu} QuickGELU activations for {layers} layers"
        )));
    }
    let head_dim = head_dim.ok_or_else(|| nr("no [1, T, H, head] reshape"))? as usize;
    if head_dim == 0 || width % head_dim != 0 {
        return Err(nr(format!(
            "head size {head_dim} does not divide width {width}"
        )));
    }
    let tokens = 1 + (image_size / patch).pow(2);
    // Class embedding: the first constant vector of D values expanded/concatenated in front
    // of the patches.
    let class_emb = class_sites
        .iter()
        .flat_map(|n| n.input.iter())
        .filter_map(|i| w.consts.get(i))
        .find(|t| t.rank() == 1 && t.len() == width && t.datum_type() == f32::datum_type())
        .ok_or_else(|| nr("no class embedding of D values"))?;
    let class_emb = values::<f32>(&class_emb)?;
    // Position embedding: the first constant T×D table gathered or added to the tokens.
    let (pos_site, pos_table) = pos_sites
        .iter()
        .filter_map(|n| Some((*n, w.consts.get(n.input.first()?)?)))
        .find(|(_, t)| t.rank() >= 2 && t.len() == tokens * width)
        .ok_or_else(|| nr("no position embedding of T×D"))?;
    if pos_site.op_type == "Gather" {
        let ix = pos_site
            .input
            .get(1)
            .and_then(|i| w.consts.get(i))
            .map(|t| values::<i64>(&t));
        let rows = pos_table.shape()[0] as i64;
        if !matches!(ix, Some(Ok(ref v)) if v.iter().copied().eq(0..rows)) {
            return Err(nr(
                "position embedding gathered with indices other than 0..T",
            ));
        }
    }
    let pos_emb = values::<f32>(&pos_table)?;
    let mut norms = norms.into_iter();
    let mut linears = linears.into_iter();
    let mut take_norm = || norms.next().ok_or_else(|| nr("missing LayerNorm"));
    let pre_ln = take_norm()?;
    let mut blocks = Vec::with_capacity(layers);
    for _ in 0..layers {
        let mut next = || linears.next().ok_or_else(|| nr("missing linear layer"));
        let (q, k, v, out) = (next()?, next()?, next()?, next()?);
        let (fc1, fc2) = (next()?, next()?);
        let ln1 = take_norm()?;
        let ln2 = take_norm()?;
        let d = (width, width);
        if [&q, &k, &v, &out].iter().any(|l| l.shape() != d)
            || fc1.shape().0 != width
            || fc2.shape() != (fc1.shape().1, width)
        {
            return Err(nr("block linear shapes are not D×D ×4, D×F, F×D"));
        }
        blocks.push(BlockWeights {
            ln1,
            q,
            k,
            v,
            out,
            ln2,
            fc1,
            fc2,
        });
    }
    let post_ln = take_norm()?;
    let proj = linears.next().ok_or_else(|| nr("missing projection"))?;
    if proj.shape().0 != width {
        return Err(nr("projection does not take the model width"));
    }
    if [&pre_ln, &post_ln]
        .iter()
        .chain(
            blocks
                .iter()
                .flat_map(|b| [&b.ln1, &b.ln2])
                .collect::<Vec<_>>()
                .iter(),
        )
        .any(|n| n.gamma.len() != width || n.beta.len() != width)
    {
        return Err(nr("LayerNorm width differs from the model width"));
    }
    Ok(VitWeights {
        image_size,
        patch,
        width,
        heads: width / head_dim,
        attn_scale: attn_scale.ok_or_else(|| nr("no scaled q·kᵀ"))?,
        patch_w,
        patch_b,
        class_emb,
        pos_emb,
        pre_ln,
        blocks,
        post_ln,
        proj,
    })
}

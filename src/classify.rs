//! Image embedding × label matrix → probabilities → the answer.
//!
//! CLIP scores a label by the cosine between the image and label embeddings, multiplied
//! by the model's learned logit scale (100 for OpenAI CLIP) and passed through a softmax
//! over the labels. Forgetting the scale gives near-uniform probabilities: the cosines of
//! a CLIP model sit within a few hundredths of each other.
//!
//! SigLIP was trained with a sigmoid loss instead: each label is scored on its own as
//! `sigmoid(scale × cosine + bias)`, with the model's learned bias (about −10), so scores
//! do not sum to one and a photo of none of the labels scores low on all of them. The
//! bundle says which ([`Scoring`]).

use serde::Serialize;

use crate::encoder::Embedding;

/// What is reported when no label reaches the threshold.
pub const UNKNOWN: &str = "unknown";

/// Label embeddings as rows of one matrix, in label-file order.
#[derive(Debug, Clone)]
pub struct LabelMatrix {
    names: Vec<String>,
    dim: usize,
    rows: Vec<f32>,
}

impl LabelMatrix {
    /// Builds the matrix; every embedding must have length `dim`.
    pub fn new(names: Vec<String>, embeddings: &[Embedding], dim: usize) -> Option<LabelMatrix> {
        if names.len() != embeddings.len()
            || names.is_empty()
            || embeddings.iter().any(|e| e.as_slice().len() != dim)
        {
            return None;
        }
        let rows = embeddings
            .iter()
            .flat_map(|e| e.as_slice().iter().copied())
            .collect();
        Some(LabelMatrix { names, dim, rows })
    }

    /// Label names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: a matrix has at least one label.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Cosine of `image` with every label, written into `out`.
    fn cosines_into(&self, image: &Embedding, out: &mut Vec<f32>) {
        out.clear();
        out.extend(self.rows.chunks_exact(self.dim).map(|row| {
            row.iter()
                .zip(image.as_slice())
                .map(|(a, b)| a * b)
                .sum::<f32>()
        }));
    }
}

/// How cosines become per-label probabilities: the loss the model was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Scoring {
    /// CLIP and most of its family: softmax over the label set of `scale × cosine`; the
    /// probabilities sum to one.
    Softmax {
        /// The learned logit scale (100 for OpenAI CLIP).
        scale: f32,
    },
    /// SigLIP: each label alone, `sigmoid(scale × cosine + bias)`.
    Sigmoid {
        /// The learned logit scale.
        scale: f32,
        /// The learned logit bias.
        bias: f32,
    },
}

impl std::fmt::Display for Scoring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scoring::Softmax { scale } => write!(f, "softmax over labels of {scale} x cosine"),
            Scoring::Sigmoid { scale, bias } => {
                write!(f, "sigmoid per label of {scale} x cosine {bias:+}")
            }
        }
    }
}

/// One label with its probability.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct LabelScore {
    /// The label.
    pub label: String,
    /// Its probability ([`Scoring`]: over the label set, or of this label alone).
    pub score: f32,
}

/// The outcome for one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The best label, or [`UNKNOWN`] when its probability is below the threshold.
    pub label: String,
    /// The best label's probability (even when reported as unknown).
    pub score: f32,
    /// The best `top_k` labels, best first.
    pub top: Vec<LabelScore>,
}

/// Probabilities of all labels for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Probability per label, in label-matrix order.
    pub probs: Vec<f32>,
    /// Cosine per label, in label-matrix order.
    pub cosines: Vec<f32>,
}

impl Scores {
    /// Label indices ordered by probability, best first (ties keep file order).
    pub fn ranking(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.probs.len()).collect();
        idx.sort_by(|&a, &b| self.probs[b].total_cmp(&self.probs[a]).then(a.cmp(&b)));
        idx
    }
}

/// Scores images against a label matrix.
#[derive(Debug, Clone)]
pub struct Classifier {
    matrix: LabelMatrix,
    scoring: Scoring,
}

impl Classifier {
    /// A classifier scoring as the model was trained to.
    pub fn new(matrix: LabelMatrix, scoring: Scoring) -> Classifier {
        Classifier { matrix, scoring }
    }

    /// The labels.
    pub fn matrix(&self) -> &LabelMatrix {
        &self.matrix
    }

    /// Cosines and the probability of every label ([`Scoring`]).
    pub fn scores(&self, image: &Embedding) -> Scores {
        let mut cosines = Vec::with_capacity(self.matrix.len());
        self.matrix.cosines_into(image, &mut cosines);
        let probs = match self.scoring {
            Scoring::Softmax { scale } => {
                let max = cosines.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                // Subtracting the max keeps exp() finite whatever the scale.
                let mut probs: Vec<f32> =
                    cosines.iter().map(|c| ((c - max) * scale).exp()).collect();
                let sum: f32 = probs.iter().sum();
                probs.iter_mut().for_each(|p| *p /= sum);
                probs
            }
            Scoring::Sigmoid { scale, bias } => cosines
                .iter()
                .map(|c| {
                    let z = scale * c + bias;
                    // Either form keeps exp() from overflowing on its side of zero.
                    if z >= 0.0 {
                        1.0 / (1.0 + (-z).exp())
                    } else {
                        let e = z.exp();
                        e / (1.0 + e)
                    }
                })
                .collect(),
        };
        Scores { probs, cosines }
    }

    /// The answer: top label (or unknown below `threshold`) and the best `top_k`.
    pub fn predict(&self, image: &Embedding, top_k: usize, threshold: f32) -> Prediction {
        let scores = self.scores(image);
        let ranking = scores.ranking();
        let top: Vec<LabelScore> = ranking
            .iter()
            .take(top_k.max(1))
            .map(|&i| LabelScore {
                label: self.matrix.names[i].clone(),
                score: scores.probs[i],
            })
            .collect();
        let best = &top[0];
        Prediction {
            label: if best.score >= threshold {
                best.label.clone()
            } else {
                UNKNOWN.to_string()
            },
            score: best.score,
            top,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(v: &[f32]) -> Embedding {
        Embedding::normalised(v.to_vec()).unwrap()
    }

    fn classifier(scale: f32) -> Classifier {
        let m = LabelMatrix::new(
            vec!["cat".into(), "dog".into(), "car".into()],
            &[
                e(&[1.0, 0.0, 0.0]),
                e(&[0.9, 0.1, 0.0]),
                e(&[0.0, 0.0, 1.0]),
            ],
            3,
        )
        .unwrap();
        Classifier::new(m, Scoring::Softmax { scale })
    }

    /// Label embeddings whose cosines with the image `[1, 0, 0, 0]` are `cos`, as
    /// real CLIP cosines are: all within a few hundredths of each other.
    fn with_cosines(cos: &[f32]) -> LabelMatrix {
        let rows: Vec<Embedding> = cos
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let mut v = vec![c, 0.0, 0.0, 0.0];
                v[1 + i % 3] = (1.0 - c * c).sqrt();
                e(&v)
            })
            .collect();
        LabelMatrix::new((0..cos.len()).map(|i| format!("l{i}")).collect(), &rows, 4).unwrap()
    }

    #[test]
    fn softmax_uses_the_logit_scale() {
        let img = e(&[1.0, 0.0, 0.0, 0.0]);
        let m = with_cosines(&[0.31, 0.27, 0.22]);
        let sharp = Classifier::new(m.clone(), Scoring::Softmax { scale: 100.0 }).scores(&img);
        let flat = Classifier::new(m, Scoring::Softmax { scale: 1.0 }).scores(&img);
        assert!((sharp.probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(sharp.probs[0] > 0.95, "{:?}", sharp.probs);
        // Without the scale the same cosines are nearly uniform: the known pitfall.
        assert!(
            flat.probs.iter().all(|&p| (p - 1.0 / 3.0).abs() < 0.02),
            "{:?}",
            flat.probs
        );
        // Reference: softmax(100 * cos) computed directly in f64.
        let z: f64 = sharp
            .cosines
            .iter()
            .map(|&x| (100.0 * x as f64).exp())
            .sum();
        for (p, &x) in sharp.probs.iter().zip(&sharp.cosines) {
            assert!((*p as f64 - (100.0 * x as f64).exp() / z).abs() < 1e-5);
        }
    }

    #[test]
    fn sigmoid_scores_each_label_alone_with_scale_and_bias() {
        let img = e(&[1.0, 0.0, 0.0, 0.0]);
        // SigLIP-like values: scale ~ 117, bias ~ -12.7; cosines around 0.1.
        let scoring = Scoring::Sigmoid {
            scale: 117.33,
            bias: -12.66,
        };
        let three = Classifier::new(with_cosines(&[0.13, 0.09, -0.02]), scoring).scores(&img);
        for (p, &x) in three.probs.iter().zip(&three.cosines) {
            let z = 117.33 * x as f64 - 12.66;
            assert!(
                (*p as f64 - 1.0 / (1.0 + (-z).exp())).abs() < 1e-5,
                "{p} at {x}"
            );
        }
        assert!(
            three.probs[0] > 0.9 && three.probs[2] < 1e-5,
            "{:?}",
            three.probs
        );
        assert!(
            three.probs.iter().sum::<f32>() > 1.0,
            "not normalised over labels"
        );
        // A label's score does not depend on the others: adding one changes nothing.
        let four = Classifier::new(with_cosines(&[0.13, 0.09, -0.02, 0.14]), scoring).scores(&img);
        assert_eq!(&four.probs[..3], &three.probs[..]);
        // Nothing that matches: every label low, so a threshold says unknown by itself.
        let none = Classifier::new(with_cosines(&[0.02, 0.01, 0.0]), scoring);
        assert_eq!(none.predict(&img, 3, 0.5).label, UNKNOWN);
        // Extreme logits stay finite.
        let hard = Scoring::Sigmoid {
            scale: 1e4,
            bias: 0.0,
        };
        let s = Classifier::new(with_cosines(&[0.9, -0.9]), hard).scores(&img);
        assert_eq!(s.probs, vec![1.0, 0.0]);
    }

    #[test]
    fn predict_ranks_and_applies_the_threshold() {
        let c = classifier(100.0);
        let p = c.predict(&e(&[0.0, 0.1, 1.0]), 2, 0.0);
        assert_eq!(p.label, "car");
        assert_eq!(p.top.len(), 2);
        assert!(p.top[0].score >= p.top[1].score);
        let p = c.predict(&e(&[1.0, 0.05, 0.0]), 5, 0.99);
        assert_eq!(p.label, UNKNOWN);
        assert_eq!(p.top.len(), 3);
        assert_eq!(p.top[0].label, "cat");
    }

    #[test]
    fn matrix_rejects_mismatched_input() {
        assert!(LabelMatrix::new(vec!["a".into()], &[], 3).is_none());
        assert!(LabelMatrix::new(vec!["a".into()], &[e(&[1.0, 0.0])], 3).is_none());
        assert!(LabelMatrix::new(vec![], &[], 3).is_none());
    }
}

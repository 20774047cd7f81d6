/*
 * Copyright (c) 2023.
 *
 * This software is free software;
 *
 * You can redistribute it or modify it under terms of the MIT, Apache License or Zlib license
 */

// edgeclip patch: the three "fancy" (triangle-filter) upsamplers below reproduce
// libjpeg-turbo's jdsample.c arithmetic exactly (h2v1_fancy_upsample,
// h1v2_fancy_upsample, h2v2_fancy_upsample), including its alternating rounding
// biases and, for 2x2, the unrounded vertical column sums. Upstream rounded
// `(3a + b + 2) >> 2` everywhere (and twice for 2x2), which shifts chroma by a
// fraction of an LSB on average and made decoded pixels differ from PIL's.

pub fn upsample_horizontal(
    input: &[i16], _ref: &[i16], _in_near: &[i16], _scratch: &mut [i16], output: &mut [i16]
) {
    assert_eq!(
        input.len() * 2,
        output.len(),
        "Input length is not half the size of the output length"
    );
    assert!(
        output.len() > 4 && input.len() > 2,
        "Too Short of a vector, cannot upsample"
    );
    let n = input.len();
    // h2v1_fancy_upsample: first column is copied, biases alternate +1 / +2.
    output[0] = input[0];
    output[1] = (input[0] * 3 + input[1] + 2) >> 2;
    for i in 1..n - 1 {
        let v = input[i] * 3;
        output[i * 2] = (v + input[i - 1] + 1) >> 2;
        output[i * 2 + 1] = (v + input[i + 1] + 2) >> 2;
    }
    output[2 * n - 2] = (input[n - 1] * 3 + input[n - 2] + 1) >> 2;
    output[2 * n - 1] = input[n - 1];
}

pub fn upsample_vertical(
    input: &[i16], in_near: &[i16], in_far: &[i16], _scratch_space: &mut [i16], output: &mut [i16]
) {
    assert_eq!(input.len() * 2, output.len());
    assert_eq!(in_near.len(), input.len());
    assert_eq!(in_far.len(), input.len());

    let middle = output.len() / 2;
    let (out_top, out_bottom) = output.split_at_mut(middle);

    // h1v2_fancy_upsample: the upper output row (nearest other row above) rounds
    // with +1, the lower one with +2.
    for ((near, far), x) in input.iter().zip(in_near.iter()).zip(out_top) {
        *x = ((3 * near) + far + 1) >> 2;
    }
    for ((near, far), x) in input.iter().zip(in_far.iter()).zip(out_bottom) {
        *x = ((3 * near) + far + 2) >> 2;
    }
}

/// One output row of h2v2_fancy_upsample from the current input row and the
/// nearer of the two neighbouring rows.
fn upsample_hv_row(input: &[i16], other: &[i16], colsum: &mut [i16], output: &mut [i16]) {
    let n = input.len();
    // Column sums are kept at 4x scale, unrounded, as libjpeg does.
    for ((c, a), b) in colsum.iter_mut().zip(input).zip(other) {
        *c = a * 3 + b;
    }
    if n == 1 {
        output[0] = (colsum[0] * 4 + 8) >> 4;
        output[1] = (colsum[0] * 4 + 7) >> 4;
        return;
    }
    output[0] = (colsum[0] * 4 + 8) >> 4;
    output[1] = (colsum[0] * 3 + colsum[1] + 7) >> 4;
    for i in 1..n - 1 {
        output[i * 2] = (colsum[i] * 3 + colsum[i - 1] + 8) >> 4;
        output[i * 2 + 1] = (colsum[i] * 3 + colsum[i + 1] + 7) >> 4;
    }
    output[2 * n - 2] = (colsum[n - 1] * 3 + colsum[n - 2] + 8) >> 4;
    output[2 * n - 1] = (colsum[n - 1] * 4 + 7) >> 4;
}

pub fn upsample_hv(
    input: &[i16], in_near: &[i16], in_far: &[i16], scratch_space: &mut [i16], output: &mut [i16]
) {
    assert_eq!(input.len() * 4, output.len());
    assert!(input.len() * 2 <= scratch_space.len());
    let colsum = &mut scratch_space[..input.len()];
    let output_half = output.len() / 2;
    let (top, bottom) = output.split_at_mut(output_half);
    // The upper output row leans on the row above, the lower one on the row below.
    upsample_hv_row(input, in_near, colsum, top);
    upsample_hv_row(input, in_far, colsum, bottom);
}

pub fn upsample_generic(
    input: &[i16], _in_near: &[i16], _in_far: &[i16], _scratch_space: &mut [i16],
    output: &mut [i16]
) {
    // use nearest sample
    let difference = output.len() / input.len();
    if difference > 0 {
        // nearest neighbour
        for (input, chunk_output) in input.iter().zip(output.chunks_exact_mut(difference)) {
            chunk_output.iter_mut().for_each(|x| *x = *input);
        }
    }
}

function [bits, errors, elapsed_s] = bench_baseline (ebn0_db, max_bits, seed)
  % The straightforward per-frame loop the kernel is measured against: 4096-bit frames,
  % randi bits, +/-1 mapping, randn noise, hard decision, count (whole frames only).
  frame_bits = 4096;
  sigma = sqrt (1 / (2 * 10 ^ (ebn0_db / 10)));
  rand ("state", seed);
  randn ("state", seed);
  frames = ceil (max_bits / frame_bits);
  errors = 0;
  t0 = tic ();
  for k = 1:frames
    b = randi ([0, 1], frame_bits, 1);
    r = (1 - 2 * b) + sigma * randn (frame_bits, 1);
    errors += sum ((r < 0) != b);
  endfor
  elapsed_s = toc (t0);
  bits = frames * frame_bits;
endfunction

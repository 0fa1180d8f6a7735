function [bits, elapsed_s] = bench_ceiling (max_bits, chunk_bits, seed, draws)
  % The ceiling: Octave alone drawing the numbers a bits + noise simulation needs, one
  % rand (the bit) and one randn (the noise) per bit, in chunks of chunk_bits.
  % draws = "randn" draws only the noise: what the all-+1 kernel needs (for reference).
  if (nargin < 4)
    draws = "rand+randn";
  endif
  rand ("state", seed);
  randn ("state", seed);
  with_rand = strcmp (draws, "rand+randn");
  bits = 0;
  t0 = tic ();
  while (bits < max_bits)
    n = min (chunk_bits, max_bits - bits);
    if (with_rand)
      u = rand (n, 1);
    endif
    z = randn (n, 1);
    bits += n;
  endwhile
  elapsed_s = toc (t0);
endfunction

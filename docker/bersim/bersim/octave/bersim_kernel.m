function [bits, errors, elapsed_s] = bersim_kernel (ebn0_db, max_bits, seed, target_errors, chunk_bits, mode)
  % Monte Carlo bit-error count of BPSK over AWGN at one Eb/N0.
  %
  % [bits, errors, elapsed_s] = bersim_kernel (ebn0_db, max_bits, seed,
  %                                            target_errors, chunk_bits, mode)
  %
  %   ebn0_db        Eb/N0 in dB.
  %   max_bits       number of bits to simulate (exactly, unless early stop).
  %   seed           seeds Octave's default generator via rand/randn ("state", seed).
  %   target_errors  stop after the first chunk that brings the error count to at
  %                  least this many (0 = no early stop; default 0).
  %   chunk_bits     bits per chunk; bounds memory (default 2^18 bits: 2 MiB of
  %                  doubles). benchmarks/bench_kernel.py prints the throughput at
  %                  each chunk size, which this default is chosen from.
  %   mode           "fast" (default): all-+1 transmission, see below;
  %                  "explicit": random bits, +/-1 mapping, noise, hard decision.
  %
  %   bits           bits actually simulated, errors: bit errors counted (doubles,
  %                  exact up to 2^53); elapsed_s: time of the chunk loop (tic/toc).
  %
  % Why "fast" is exact, not an approximation (the all-zero-codeword argument):
  % with Eb = 1, bit b is sent as s = 1 - 2b in {+1, -1} and received as
  % r = s + sigma*z, z ~ N(0,1) independent of b, sigma^2 = N0/2 = 1/(2*Eb/N0).
  % The hard decision errs iff s*r < 0, i.e. iff s*z*sigma < -1. Since z is
  % symmetric, s*z ~ N(0,1) for either s and independent of b, so each bit errs
  % independently with the same probability P(z < -sqrt(2*Eb/N0)) = Q(sqrt(2 Eb/N0))
  % = 0.5*erfc(sqrt(Eb/N0)), whatever the transmitted bits are. The error count
  % is Binomial(bits, Pb) either way, so sending all +1 and counting
  % z < -sqrt(2*Eb/N0) has the same distribution as the explicit chain while
  % drawing one random number per bit instead of two and building no bit,
  % symbol or received-signal vectors. tests/docker/bersim/test_kernel.py checks
  % that both modes agree with theory and with each other.

  if (nargin < 4 || isempty (target_errors))
    target_errors = 0;
  endif
  if (nargin < 5 || isempty (chunk_bits))
    chunk_bits = 2^18;
  endif
  if (nargin < 6 || isempty (mode))
    mode = "fast";
  endif
  % Doubles throughout: integer classes would saturate and mix badly with double maths.
  max_bits = double (max_bits);
  target_errors = double (target_errors);
  chunk_bits = double (chunk_bits);
  seed = double (seed);

  ebn0 = 10 ^ (double (ebn0_db) / 10);
  rand ("state", seed);
  randn ("state", seed);

  bits = 0;
  errors = 0;
  t0 = tic ();
  switch (mode)
    case "fast"
      threshold = -sqrt (2 * ebn0);
      while (bits < max_bits)
        n = min (chunk_bits, max_bits - bits);
        % One temporary double vector and one logical per chunk; nnz beats sum here.
        errors += nnz (randn (n, 1) < threshold);
        bits += n;
        if (target_errors > 0 && errors >= target_errors)
          break;
        endif
      endwhile
    case "explicit"
      sigma = sqrt (1 / (2 * ebn0));
      while (bits < max_bits)
        n = min (chunk_bits, max_bits - bits);
        b = randi ([0, 1], n, 1);
        r = (1 - 2 * b) + sigma * randn (n, 1);
        errors += nnz ((r < 0) != b);
        bits += n;
        if (target_errors > 0 && errors >= target_errors)
          break;
        endif
      endwhile
    otherwise
      error ("bersim_kernel: unknown mode '%s' (use \"fast\" or \"explicit\")", mode);
  endswitch
  elapsed_s = toc (t0);
endfunction

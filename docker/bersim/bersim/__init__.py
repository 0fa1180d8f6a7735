"""Monte Carlo BER of BPSK over AWGN: an Octave kernel driven from Python."""

__version__ = "0.1.0"

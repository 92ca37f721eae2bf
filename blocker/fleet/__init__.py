"""Distribution to a fleet of resolvers: a hidden primary (Knot DNS or BIND) serving every
operator's zone by IXFR with TSIG, the secondaries' config snippets, and the serial they serve."""

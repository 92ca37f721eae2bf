"""Probing: do the operators' resolvers apply the policy? (See ARCHITECTURE.md.)

model (Check, CheckResult, Signature), wire (raw DNS bytes), classify (one reply -> a verdict),
transports (UDP/TCP lanes), engine (a pass: scheduling, rate limits, retries), proof (when an
answer proves the order), canary (which zone a resolver applies), expectations (what a pass
must find, from the policy), passes (one operator's pass, canaries and proof included).
"""

"""GRADIEND (gradient-based gender feature learning, SPEC §1) as the method plugins gradiend-bpi/-fpi/-mpi.

Modules: data (GENTER/GENEUTRAL/GENTYPES/NAMExact/NAMExtend), examples (masked batches), params (the edited
parameter set), gradients (g+ and g+ - g- by one forward and two backward passes), model (the autoencoder),
train (seeds, evaluation, resumable checkpoints), encoder_eval and decoder_eval (SPEC §1.6, §1.7),
method (the Debiasers), cli (`bench gradiend train|encoder|decoder`).
"""
from methods.gradiend.method import GradiendBPI, GradiendDebiaser, GradiendFPI, GradiendMPI

__all__ = ["GradiendBPI", "GradiendFPI", "GradiendMPI", "GradiendDebiaser"]

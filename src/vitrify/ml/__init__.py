"""Likelihood engine (L1): E-step, M-step, EM and VDAM optimisers shared by 2D and 3D."""

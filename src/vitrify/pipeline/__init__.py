"""Project, pipeliner and Schemes (L3). Never imports torch, so `vitrify schemer` starts fast."""

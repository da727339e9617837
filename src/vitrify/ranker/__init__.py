"""Class ranker (L1): scores 2D class averages 0..1 from images and features."""

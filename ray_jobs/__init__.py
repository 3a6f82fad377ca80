"""Encore's Ray jobs: recommender and music model training, scoring, generation."""

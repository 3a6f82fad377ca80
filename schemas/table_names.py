"""Every lakehouse table's name, as one constant each: code names tables through these, never
through quoted strings. Plain strings, so Ray jobs can use them without importing pyspark; the
tables' schemas and docs are in ``schemas.tables``.
"""
BRONZE_PLAYS_RAW = "bronze.plays_raw"
BRONZE_CATALOG_RAW = "bronze.catalog_raw"
BRONZE_PLAY_COUNTS_RAW = "bronze.play_counts_raw"
BRONZE_REJECTED_FILES = "bronze.rejected_files"
SILVER_PLAYS = "silver.plays"
SILVER_PLAYS_QUARANTINE = "silver.plays_quarantine"
SILVER_PLAY_COUNTS = "silver.play_counts"
SILVER_CATALOG = "silver.catalog"
SILVER_MUSIC_QUARANTINE = "silver.music_quarantine"
GOLD_INTERACTIONS = "gold.interactions"
GOLD_ITEMS = "gold.items"
GOLD_USER_PROFILES = "gold.user_profiles"
GOLD_MUSIC_SEQUENCES = "gold.music_sequences"
WAREHOUSE_RECOMMENDATIONS = "warehouse.recommendations"
WAREHOUSE_INSPIRATION_PACKS = "warehouse.inspiration_packs"

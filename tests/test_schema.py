from m3bert_tf import schema


def test_blocks_are_contiguous_and_cover_324_channels():
    start = 0
    for block in schema.BLOCKS:
        assert block.start == start
        start = block.stop
    assert start == schema.NUM_FEATURES == 324
    assert [b.name for b in schema.BLOCKS] == ["chroma", "mfcc", "delta_mfcc", "mel", "cqt"]


def test_spectral_range_is_mel_plus_cqt():
    assert (schema.SPECTRAL_START, schema.SPECTRAL_STOP) == (52, 324)
    assert schema.NUM_SPECTRAL == 272 == schema.BLOCK["mel"].dim + schema.BLOCK["cqt"].dim


def test_chunk_is_30_seconds():
    assert abs(schema.CHUNK_FRAMES * schema.HOP_LENGTH / schema.SAMPLE_RATE - 30.0) < 0.1

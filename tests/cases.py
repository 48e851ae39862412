"""The shape grid every backend is tested on: small, but covering the edge cases.

Each case is (input shape, weight shape or op arguments, keyword arguments).
Sizes stay small so the CUDA simulator and the CPU-emulated CUDA C can run
them: they still include batch 1, one channel, 1x1 kernels, sizes that are
not tile multiples, inputs smaller than a tile, stride > kernel, dilation,
groups, depthwise, every padding form and mode, and unbatched inputs.
"""

# (input_shape, weight_shape, kwargs) for conv2d
CONV2D = [
    ((1, 1, 5, 5), (1, 1, 3, 3), {}),
    ((2, 3, 7, 9), (4, 3, 3, 3), {"padding": 1}),
    ((2, 3, 8, 8), (5, 3, 1, 1), {}),
    ((1, 4, 9, 7), (6, 4, 1, 1), {"stride": 2}),
    ((2, 2, 11, 10), (3, 2, 3, 2), {"stride": (2, 3), "padding": (1, 2)}),
    ((1, 3, 12, 12), (2, 3, 2, 2), {"stride": 3}),             # stride > kernel
    ((2, 2, 10, 11), (3, 2, 3, 3), {"dilation": 2, "padding": 2}),
    ((1, 2, 9, 9), (2, 2, 3, 2), {"dilation": (2, 3), "stride": 2}),
    ((2, 4, 7, 8), (6, 2, 3, 3), {"groups": 2, "padding": 1}),
    ((2, 6, 9, 9), (6, 1, 3, 3), {"groups": 6, "padding": 1}),   # depthwise
    ((1, 4, 9, 8), (8, 1, 3, 3), {"groups": 4, "stride": 2}),    # depthwise multiplier 2
    ((1, 2, 6, 7), (3, 2, 4, 4), {"padding": "same"}),           # even kernel: extra at end
    ((1, 2, 7, 6), (2, 2, 3, 2), {"padding": "same", "dilation": 2}),
    ((1, 2, 6, 6), (3, 2, 3, 3), {"padding": "valid"}),
    ((1, 2, 7, 8), (3, 2, 3, 3), {"padding": 2, "padding_mode": "reflect"}),
    ((2, 2, 6, 7), (3, 2, 3, 2), {"padding": (1, 2), "padding_mode": "replicate"}),
    ((1, 3, 6, 5), (2, 3, 3, 3), {"padding": (2, 1), "padding_mode": "circular",
                                  "stride": 2}),
    ((1, 2, 7, 7), (2, 2, 4, 3), {"padding": "same", "padding_mode": "reflect"}),
    ((1, 2, 2, 3), (3, 2, 3, 3), {"padding": 1}),                # input smaller than kernel
    ((1, 1, 20, 33), (1, 1, 5, 5), {"padding": 2}),              # single-channel image filter
    ((1, 1, 12, 13), (1, 1, 1, 2), {}),                          # edge-detection kernel [-1, 1]
    ((3, 7, 7), (4, 3, 3, 3), {"padding": 1}),                   # unbatched
]

# (input_shape, weight_shape, kwargs) for conv_transpose2d; weight is (C_in, C_out/g, kh, kw)
CONV_TRANSPOSE2D = [
    ((1, 1, 4, 4), (1, 1, 3, 3), {}),
    ((2, 3, 5, 6), (3, 4, 3, 3), {"stride": 2, "padding": 1}),
    ((2, 3, 5, 5), (3, 2, 4, 4), {"stride": 2, "padding": 1, "output_padding": 1}),
    ((1, 4, 4, 5), (4, 3, 2, 2), {"stride": 2}),
    ((1, 4, 5, 4), (4, 2, 3, 2), {"stride": (3, 2), "padding": (1, 0),
                                  "output_padding": (2, 1)}),
    ((2, 4, 4, 4), (4, 2, 3, 3), {"groups": 2, "padding": 1}),
    ((1, 2, 5, 5), (2, 3, 3, 3), {"dilation": 2, "padding": 2}),
    ((1, 3, 4, 4), (3, 2, 2, 3), {"dilation": (2, 1), "output_padding": (1, 0), "stride": 1}),
    ((1, 3, 4, 4), (3, 1, 3, 3), {"groups": 3, "stride": 2}),    # depthwise
    ((2, 3, 3), (2, 3, 3, 3), {"stride": 2}),                    # unbatched
]

# (input_shape, kwargs) for max_pool2d
MAX_POOL2D = [
    ((1, 1, 4, 4), {"kernel_size": 2}),
    ((2, 3, 9, 8), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ((2, 2, 9, 9), {"kernel_size": 3, "stride": 2, "ceil_mode": True}),
    ((1, 2, 10, 7), {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 1),
                     "ceil_mode": True}),
    ((1, 2, 11, 10), {"kernel_size": 3, "dilation": 2, "padding": 1}),
    ((1, 2, 8, 8), {"kernel_size": 2, "stride": 3}),             # stride > kernel
    ((1, 1, 32, 32), {"kernel_size": 1, "stride": 2, "ceil_mode": True}),  # pytorch#57178
    ((3, 7, 7), {"kernel_size": 2}),                             # unbatched
]

# (input_shape, kwargs) for avg_pool2d
AVG_POOL2D = [
    ((1, 1, 4, 4), {"kernel_size": 2}),
    ((2, 3, 9, 8), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ((2, 2, 9, 9), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ((2, 2, 9, 9), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                    "count_include_pad": False}),
    ((1, 2, 10, 7), {"kernel_size": (4, 3), "stride": (3, 2), "padding": (2, 1),
                     "ceil_mode": True}),
    ((1, 2, 8, 8), {"kernel_size": 3, "padding": 1, "divisor_override": 5}),
    ((3, 7, 7), {"kernel_size": 2}),
]

# (input_shape, output_size) for adaptive pooling
ADAPTIVE = [
    ((1, 1, 5, 5), 1),
    ((2, 3, 9, 7), (4, 3)),
    ((1, 2, 7, 10), (3, None)),
    ((1, 2, 5, 4), (7, 9)),        # output larger than input: overlapping windows
    ((2, 2, 8, 8), 4),
    ((3, 7, 6), (2, 2)),           # unbatched
]

"""The network of section 4.3: shapes, output range, the factorised variant, Eq. 1."""

import numpy as np
import pytest
import torch

from imuse_lib import network
from imuse_lib.errors import ModelMismatchError


@pytest.mark.parametrize("factorised", [False, True])
def test_shapes_and_range(factorised):
    torch.manual_seed(0)
    net = network.IMUSENet(40, 24, factorised=factorised).eval()
    img, aud = torch.randn(7, 40) * 50, torch.randn(7, 24) * 50  # large inputs: sigmoid must still bound
    iva, mva = net(img, aud)
    assert iva.shape == (7, 2) and mva.shape == (7, 2)
    for out in (iva, mva):
        assert torch.all(out >= 0) and torch.all(out <= 1)
    assert net.image_vector(img).shape == (7, 256)
    assert net.music_vector(aud).shape == (7, 128)
    fi, fm = net.fuse(net.image_vector(img), net.music_vector(aud))
    torch.testing.assert_close(fi, iva)
    torch.testing.assert_close(fm, mva)


def test_joint_has_fusion_of_384_to_128():
    net = network.IMUSENet(10, 6)
    assert net.fusion[0].in_features == 384 and net.fusion[0].out_features == 128
    assert any(isinstance(m, torch.nn.Dropout) for m in net.fusion)


def test_factorised_arms_are_independent():
    torch.manual_seed(1)
    net = network.IMUSENet(12, 8, factorised=True).eval()
    img = torch.randn(5, 12)
    a1, m1 = net(img, torch.randn(5, 8))
    a2, m2 = net(img, torch.randn(5, 8))
    torch.testing.assert_close(a1, a2)  # image VA does not depend on the song
    assert not torch.allclose(m1, m2)
    torch.testing.assert_close(net.image_va(img), a1)
    aud = torch.randn(3, 8)
    torch.testing.assert_close(net.music_va(aud), net(torch.randn(3, 12), aud)[1])


def test_joint_image_va_depends_on_song_and_refuses_arm_alone():
    torch.manual_seed(2)
    net = network.IMUSENet(12, 8).eval()
    img = torch.randn(5, 12)
    a1, _ = net(img, torch.randn(5, 8))
    a2, _ = net(img, torch.randn(5, 8))
    assert not torch.allclose(a1, a2)
    with pytest.raises(ModelMismatchError, match="factorised"):
        net.image_va(img)


def test_wrong_feature_size_is_a_clear_error():
    net = network.IMUSENet(12, 8)
    with pytest.raises(ModelMismatchError, match=r"expects \[B, 12\]"):
        net(torch.randn(2, 13), torch.randn(2, 8))
    with pytest.raises(ModelMismatchError, match="batch sizes"):
        net(torch.randn(2, 12), torch.randn(3, 8))


def test_predicted_similarity_is_eq1():
    iva = torch.tensor([[0.2, 0.9], [0.5, 0.5]])
    mva = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    s = network.predicted_similarity(iva, mva)
    torch.testing.assert_close(s, torch.tensor([1 - 0.5, 1.0]))
    # numpy and broadcasting [Ni,1,2] x [1,Ns,2]
    out = network.predicted_similarity(np.zeros((2, 1, 2)), np.ones((1, 3, 2)))
    np.testing.assert_allclose(out, np.full((2, 3), 1 - np.sqrt(2)))

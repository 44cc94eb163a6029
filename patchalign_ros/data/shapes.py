"""Procedural part-labelled objects a robot meets, built from mesh primitives (open3d).

Every generator takes a numpy Generator and returns a LabeledMesh: z-up, metres, standing on
z = 0, with randomised proportions. PART_SYNONYMS gives the names a user may ask for.
"""
from __future__ import annotations

import functools

import numpy as np

from .synthetic import LabeledMesh


def _o3d():
    import open3d as o3d

    return o3d


def _rot_z_to(axis) -> np.ndarray:
    from ..inference.preprocess import rotation_to_z

    return rotation_to_z(np.asarray(axis, dtype=np.float64)).T  # maps +z onto axis


def cyl(r, h, c=(0, 0, 0), axis=(0, 0, 1), res=32):
    """Cylinder of radius r and length h centred at c along axis."""
    m = _o3d().geometry.TriangleMesh.create_cylinder(radius=r, height=h, resolution=res, split=max(1, int(h / r)))
    m.rotate(_rot_z_to(axis), center=(0, 0, 0))
    return m.translate(c)


def box(sx, sy, sz, c=(0, 0, 0)):
    m = _o3d().geometry.TriangleMesh.create_box(sx, sy, sz)
    return m.translate(np.asarray(c) - np.array([sx, sy, sz]) / 2)


def sphere(r, c=(0, 0, 0), res=16):
    return _o3d().geometry.TriangleMesh.create_sphere(radius=r, resolution=res).translate(c)


def cone(r, h, base=(0, 0, 0), axis=(0, 0, 1), res=24):
    m = _o3d().geometry.TriangleMesh.create_cone(radius=r, height=h, resolution=res)
    m.rotate(_rot_z_to(axis), center=(0, 0, 0))
    return m.translate(base)


def ring(big_r, tube_r, c=(0, 0, 0), normal=(0, 1, 0), keep=None):
    """Torus; ``keep`` = a function of the local vertex positions choosing which part to keep
    (e.g. an arc)."""
    m = _o3d().geometry.TriangleMesh.create_torus(torus_radius=big_r, tube_radius=tube_r,
                                                  radial_resolution=32, tubular_resolution=10)
    if keep is not None:
        v = np.asarray(m.vertices)
        m.remove_vertices_by_mask(~keep(v))
    m.rotate(_rot_z_to(normal), center=(0, 0, 0))
    return m.translate(c)


def shell(r, h, c=(0, 0, 0), top_open=True, res=40):
    """A cylinder with the top cap removed (a container's wall and floor)."""
    m = cyl(r, h, (0, 0, 0), res=res)
    if top_open:
        v = np.asarray(m.vertices)
        m.remove_vertices_by_mask((v[:, 2] > h / 2 - 1e-6) & (np.hypot(v[:, 0], v[:, 1]) < r - 1e-6))
    return m.translate(np.asarray(c) + [0, 0, h / 2])


def hemisphere(r, c=(0, 0, 0), upward=True, res=24):
    m = sphere(r, (0, 0, 0), res)
    v = np.asarray(m.vertices)
    m.remove_vertices_by_mask(v[:, 2] > 1e-6 if upward else v[:, 2] < -1e-6)
    return m.translate(c)


U = lambda rng, a, b: float(rng.uniform(a, b))  # noqa: E731


# --- kitchen ------------------------------------------------------------------------------
def tapered(mesh, h, taper):
    """Scale a z-up mesh's radius linearly with height: 1 - taper at the bottom, 1 at h."""
    v = np.asarray(mesh.vertices).copy()
    k = 1 - taper * (1 - np.clip(v[:, 2] / h, 0, 1))
    v[:, :2] *= k[:, None]
    mesh.vertices = type(mesh.vertices)(v)
    return mesh


def d_handle(x0, z0, z1, reach, thick, axis_y=0.0):
    """A D-shaped handle standing out from x0 between heights z0 and z1: two arms and a grip."""
    return [box(reach, thick, thick, (x0 + reach / 2, axis_y, z1 - thick / 2)),
            box(reach, thick, thick, (x0 + reach / 2, axis_y, z0 + thick / 2)),
            box(thick, thick, z1 - z0, (x0 + reach - thick / 2, axis_y, (z0 + z1) / 2))]


def mug(rng):
    """Mugs as they come: straight or tapered bodies, round (C) or D-shaped handles, high or low."""
    r, h = U(rng, .035, .055), U(rng, .07, .12)
    taper = U(rng, 0, .25) if rng.random() < .5 else 0.0
    style = rng.integers(3)
    body = tapered(shell(r, h), h, taper)
    z_mid = h * U(rng, .45, .6)
    if style == 0:  # C ring, part of it inside the body wall
        rr = U(rng, .02, .034)
        handles = [("handle", ring(rr, U(rng, .005, .009), (r + rr * .6, 0, z_mid), (0, 1, 0)))]
    elif style == 1:  # D handle with straight arms
        span = h * U(rng, .45, .75)
        handles = [("handle", m) for m in d_handle(r - .004, z_mid - span / 2, z_mid + span / 2, U(rng, .022, .035),
                                                    U(rng, .008, .013))]
    else:  # an ear: a half ring whose ends sit on the wall
        rr = U(rng, .018, .03)
        handles = [("handle", ring(rr, U(rng, .006, .01), (r, 0, z_mid), (0, 1, 0), keep=lambda v: v[:, 0] > -.002))]
    return [("body", body)] + handles + [("rim", ring(r, .004, (0, 0, h), (0, 0, 1)))]


def cup(rng):
    r, h = U(rng, .03, .045), U(rng, .08, .13)
    return [("body", shell(r, h, (0, 0, .01))), ("base", cyl(r * .9, .01, (0, 0, .005)))]


def kettle(rng):
    r, h = U(rng, .07, .09), U(rng, .12, .17)
    arc = ring(r * .7, .01, (0, 0, h + .01), (0, 1, 0), keep=lambda v: v[:, 1] > -0.2 * r)
    return [("body", cyl(r, h, (0, 0, h / 2))), ("handle", arc),
            ("spout", cone(.02, U(rng, .08, .11), (r * .8, 0, h * .6), (1, 0, .8))),
            ("lid", cyl(r * .6, .015, (0, 0, h + .0075)))]


def teapot(rng):
    r = U(rng, .06, .08)
    rr = U(rng, .03, .04)
    return [("body", sphere(r, (0, 0, r), 20)), ("handle", ring(rr, .008, (-(r + rr * .5), 0, r), (0, 1, 0))),
            ("spout", cone(.018, U(rng, .08, .1), (r * .8, 0, r * .8), (1, 0, .9))),
            ("lid", cyl(r * .5, .015, (0, 0, 2 * r))), ("knob", sphere(.012, (0, 0, 2 * r + .02)))]


def pitcher(rng):
    r, h = U(rng, .05, .065), U(rng, .16, .22)
    rr = U(rng, .035, .045)
    return [("body", shell(r, h)), ("handle", ring(rr, .009, (-(r + rr * .5), 0, h * .55), (0, 1, 0))),
            ("spout", cone(.025, .05, (r * .9, 0, h * .95), (1, 0, .6)))]


def pot(rng):
    r, h = U(rng, .09, .13), U(rng, .08, .12)
    handles = [("handle", ring(.02, .006, (s * (r + .012), 0, h * .8), (1, 0, 0), keep=lambda v: v[:, 1] > -.005))
               for s in (-1, 1)]
    handles = [("handle", box(.03, .05, .012, (s * (r + .015), 0, h * .85))) for s in (-1, 1)]
    return [("body", shell(r, h))] + handles + [("lid", cyl(r * 1.02, .012, (0, 0, h + .006))),
                                               ("knob", sphere(.015, (0, 0, h + .02)))]


def pan(rng):
    r = U(rng, .1, .14)
    length = U(rng, .15, .22)
    return [("body", shell(r, .04)), ("handle", box(length, .025, .012, (r + length / 2, 0, .035))),
            ("rivet", sphere(.006, (r + .004, .008, .035), 8)), ("rivet", sphere(.006, (r + .004, -.008, .035), 8))]


def saucepan(rng):
    r, h = U(rng, .07, .09), U(rng, .07, .1)
    length = U(rng, .14, .18)
    return [("body", shell(r, h)), ("handle", box(length, .025, .014, (r + length / 2, 0, h * .8))),
            ("lid", cyl(r * 1.02, .012, (0, 0, h + .006)))]


def bottle(rng):
    r, h = U(rng, .03, .045), U(rng, .14, .2)
    neck_h = U(rng, .03, .05)
    return [("body", cyl(r, h, (0, 0, h / 2))), ("neck", cone(r, neck_h * 2, (0, 0, h), res=32)),
            ("cap", cyl(r * .45, .025, (0, 0, h + neck_h + .01))), ("label", cyl(r * 1.02, h * .4, (0, 0, h * .45)))]


def jug(rng):
    """A detergent-style jug with a moulded handle (like the real scan's bleach bottle)."""
    w, d, h = U(rng, .09, .12), U(rng, .06, .08), U(rng, .2, .26)
    return [("body", box(w, d, h, (0, 0, h / 2))),
            ("handle", ring(U(rng, .03, .04), .012, (w * .35, 0, h * .78), (0, 1, 0), keep=lambda v: v[:, 0] > -.01)),
            ("cap", cyl(.018, .03, (-w * .2, 0, h + .015)))]


def jar(rng):
    r, h = U(rng, .035, .055), U(rng, .08, .14)
    return [("body", cyl(r, h, (0, 0, h / 2))), ("lid", cyl(r * 1.03, .02, (0, 0, h + .01)))]


def bucket(rng):
    r, h = U(rng, .1, .14), U(rng, .15, .22)
    return [("body", shell(r, h)), ("handle", ring(r, .006, (0, 0, h), (0, 1, 0), keep=lambda v: v[:, 2] > 0)),
            ("rim", ring(r, .006, (0, 0, h), (0, 0, 1)))]


def bowl(rng):
    r = U(rng, .06, .1)
    return [("body", hemisphere(r, (0, 0, r))), ("base", cyl(r * .4, .01, (0, 0, .005)))]


def wine_glass(rng):
    r, stem = U(rng, .03, .04), U(rng, .06, .09)
    return [("base", cyl(.032, .006, (0, 0, .003))), ("stem", cyl(.005, stem, (0, 0, stem / 2))),
            ("bowl", hemisphere(r, (0, 0, stem + r))), ("rim", ring(r, .002, (0, 0, stem + r), (0, 0, 1)))]


def knife(rng):
    bl, hl = U(rng, .1, .16), U(rng, .08, .11)
    return [("blade", box(bl, .025, .003, (bl / 2 + .01, 0, .002))), ("bolster", box(.02, .02, .014, (0, 0, .007))),
            ("handle", box(hl, .022, .018, (-hl / 2 - .01, 0, .009)))]


def spatula(rng):
    hl = U(rng, .15, .22)
    return [("head", box(.08, .06, .004, (.04, 0, .002))), ("handle", cyl(.008, hl, (-hl / 2, 0, .008), (1, 0, 0)))]


def ladle(rng):
    r, hl = U(rng, .03, .045), U(rng, .18, .25)
    return [("bowl", hemisphere(r, (0, 0, r))), ("handle", cyl(.006, hl, (-(r + hl / 2 * .8), 0, r + hl * .3),
                                                             (1, 0, .7))),
            ("hook", ring(.012, .004, (-(r + hl * .8), 0, r + hl * .62), (0, 1, 0)))]


def spoon(rng):
    hl = U(rng, .1, .14)
    head = sphere(.02, (0, 0, .008))
    head.scale(1.0, center=(0, 0, 0))
    return [("bowl", box(.05, .035, .008, (0, 0, .004))), ("handle", box(hl, .012, .004, (-(hl / 2 + .025), 0, .002)))]


def cutting_board(rng):
    w, d = U(rng, .25, .35), U(rng, .18, .25)
    return [("board", box(w, d, .015, (0, 0, .0075))), ("handle", box(.08, d * .5, .015, (w / 2 + .04, 0, .0075)))]


# --- tools --------------------------------------------------------------------------------
def hammer(rng):
    hl = U(rng, .22, .3)
    return [("handle", cyl(.013, hl, (0, 0, .015), (1, 0, 0))), ("head", box(.03, .06, .03, (hl / 2, 0, .015))),
            ("face", cyl(.016, .03, (hl / 2, .045, .015), (0, 1, 0))), ("claw", box(.012, .05, .02, (hl / 2, -.055, .012)))]


def screwdriver(rng):
    hl, sl = U(rng, .09, .12), U(rng, .08, .15)
    return [("handle", cyl(.015, hl, (-hl / 2, 0, .015), (1, 0, 0))),
            ("shaft", cyl(.003, sl, (sl / 2, 0, .015), (1, 0, 0))), ("tip", cone(.004, .012, (sl, 0, .015), (1, 0, 0)))]


def scissors(rng):
    bl = U(rng, .07, .1)
    return [("blade", box(bl, .008, .003, (bl / 2, .006, .002))), ("blade", box(bl, .008, .003, (bl / 2, -.006, .005))),
            ("handle", ring(.017, .004, (-.025, .022, .004), (0, 0, 1))),
            ("handle", ring(.017, .004, (-.025, -.022, .004), (0, 0, 1)))]


def wrench(rng):
    hl = U(rng, .15, .22)
    jaw = ring(.018, .006, (hl / 2 + .012, 0, .006), (0, 0, 1), keep=lambda v: v[:, 0] < .01)
    return [("handle", box(hl, .02, .008, (0, 0, .004))), ("jaw", jaw)]


def pliers(rng):
    hl = U(rng, .1, .13)
    return [("handle", box(hl, .012, .01, (-hl / 2, .012, .005))), ("handle", box(hl, .012, .01, (-hl / 2, -.012, .005))),
            ("jaw", box(.05, .018, .01, (.025, 0, .005))), ("pivot", cyl(.008, .014, (0, 0, .007)))]


def flashlight(rng):
    bl = U(rng, .1, .16)
    return [("body", cyl(.015, bl, (0, 0, .018), (1, 0, 0))), ("head", cyl(.022, .04, (bl / 2 + .02, 0, .022), (1, 0, 0))),
            ("button", box(.012, .008, .006, (0, 0, .035))), ("lens", cyl(.019, .004, (bl / 2 + .042, 0, .022), (1, 0, 0)))]


def spray_bottle(rng):
    r, h = U(rng, .035, .045), U(rng, .15, .2)
    return [("body", cyl(r, h, (0, 0, h / 2))), ("neck", cyl(r * .45, .04, (0, 0, h + .02))),
            ("trigger", box(.012, .018, .045, (r * .7, 0, h + .01))), ("nozzle", box(.05, .025, .025, (.01, 0, h + .05)))]


def toothbrush(rng):
    hl = U(rng, .13, .16)
    return [("handle", box(hl, .012, .01, (-hl / 2, 0, .005))), ("head", box(.025, .012, .006, (.0125, 0, .003))),
            ("bristles", box(.022, .01, .012, (.0125, 0, .012)))]


# --- furniture and fixtures ---------------------------------------------------------------
def chair(rng):
    s, lh = U(rng, .38, .46), U(rng, .4, .47)
    legs = [("leg", box(.03, .03, lh, (x * (s / 2 - .02), y * (s / 2 - .02), lh / 2))) for x in (-1, 1) for y in (-1, 1)]
    bh = U(rng, .3, .45)
    parts = legs + [("seat", box(s, s, .04, (0, 0, lh + .02))), ("back", box(s, .03, bh, (0, s / 2 - .015, lh + .04 + bh / 2)))]
    if rng.random() < .5:
        parts += [("stretcher", box(s - .06, .02, .02, (0, y * (s / 2 - .02), lh * .3))) for y in (-1, 1)]
    if rng.random() < .4:
        parts += [("arm", box(.04, s * .8, .03, (x * (s / 2 - .02), 0, lh + .22))) for x in (-1, 1)]
    return parts


def stool(rng):
    r, lh = U(rng, .15, .2), U(rng, .45, .65)
    legs = [("leg", cyl(.014, lh, (r * .7 * np.cos(a), r * .7 * np.sin(a), lh / 2))) for a in np.linspace(0, 2 * np.pi, 4)[:3]]
    return legs + [("seat", cyl(r, .035, (0, 0, lh + .0175))),
                   ("footrest", ring(r * .65, .008, (0, 0, lh * .35), (0, 0, 1)))]


def table(rng):
    w, d, h = U(rng, .6, 1.0), U(rng, .4, .7), U(rng, .45, .75)
    legs = [("leg", box(.04, .04, h, (x * (w / 2 - .04), y * (d / 2 - .04), h / 2))) for x in (-1, 1) for y in (-1, 1)]
    parts = legs + [("top", box(w, d, .03, (0, 0, h + .015)))]
    parts += [("apron", box(w - .1, .02, .07, (0, y * (d / 2 - .03), h - .035))) for y in (-1, 1)]
    if rng.random() < .5:
        parts.append(("drawer", box(w * .4, d * .6, .08, (0, 0, h - .05))))
    return parts


def lamp(rng):
    ph = U(rng, .25, .4)
    shade = cone(U(rng, .08, .12), .12, (0, 0, ph), res=32)
    return [("base", cyl(U(rng, .06, .09), .02, (0, 0, .01))), ("pole", cyl(.008, ph, (0, 0, ph / 2))), ("shade", shade),
            ("bulb", sphere(.025, (0, 0, ph + .02))), ("switch", box(.02, .012, .01, (.04, 0, .025)))]


def cabinet(rng):
    w, d, h = U(rng, .4, .6), U(rng, .3, .45), U(rng, .5, .8)
    return [("body", box(w, d, h, (0, 0, h / 2))), ("door", box(w * .96, .015, h * .9, (0, -d / 2 - .008, h / 2))),
            ("handle", box(.015, .025, .12, (w * .38, -d / 2 - .025, h * .55)))]


def drawer(rng):
    w, d, h = U(rng, .3, .5), U(rng, .3, .45), U(rng, .12, .2)
    return [("body", box(w, d, h, (0, 0, h / 2))), ("front", box(w * 1.04, .02, h * 1.1, (0, -d / 2 - .01, h / 2))),
            ("handle", box(U(rng, .08, .14), .025, .015, (0, -d / 2 - .03, h * .6)))]


def door(rng):
    w, h = U(rng, .7, .9), U(rng, 1.9, 2.1)
    return [("panel", box(w, .04, h, (0, 0, h / 2))), ("handle", box(.12, .05, .02, (w * .35, -.045, h * .48))),
            ("lock", cyl(.015, .01, (w * .35, -.025, h * .55), (0, 1, 0))),
            ("hinge", box(.02, .05, .1, (-w / 2, 0, h * .8))), ("hinge", box(.02, .05, .1, (-w / 2, 0, h * .2)))]


def faucet(rng):
    sh = U(rng, .15, .25)
    return [("base", cyl(.03, .02, (0, 0, .01))), ("spout", cyl(.012, sh, (0, 0, .02 + sh / 2))),
            ("spout", cyl(.012, .12, (.06, 0, sh + .02), (1, 0, 0))), ("handle", box(.02, .07, .015, (-.02, 0, .05))),
            ("aerator", cyl(.013, .015, (.12, 0, sh + .012)))]


def shelf(rng):
    w, h, d = U(rng, .5, .8), U(rng, .6, 1.0), U(rng, .2, .3)
    boards = [("shelf", box(w, d, .02, (0, 0, z))) for z in np.linspace(.05, h - .02, 3)]
    return boards + [("side", box(.02, d, h, (x * w / 2, 0, h / 2))) for x in (-1, 1)] + \
        [("back panel", box(w, .01, h, (0, d / 2, h / 2)))]


def trash_can(rng):
    r, h = U(rng, .12, .16), U(rng, .3, .45)
    return [("body", cyl(r, h, (0, 0, h / 2))), ("lid", cyl(r * 1.03, .025, (0, 0, h + .0125))),
            ("pedal", box(.08, .05, .012, (0, -r - .025, .02)))]


# --- containers and devices ---------------------------------------------------------------
def box_with_lid(rng):
    w, d, h = U(rng, .08, .16), U(rng, .06, .12), U(rng, .05, .1)
    return [("body", box(w, d, h, (0, 0, h / 2))), ("lid", box(w * 1.04, d * 1.04, .015, (0, 0, h + .0075)))]


def bag(rng):
    w, d, h = U(rng, .25, .35), U(rng, .1, .15), U(rng, .2, .3)
    return [("body", box(w, d, h, (0, 0, h / 2))),
            ("handle", ring(w * .25, .008, (0, 0, h), (0, 1, 0), keep=lambda v: v[:, 2] > 0)),
            ("zipper", box(w * .8, .012, .006, (0, 0, h + .003))), ("pocket", box(w * .6, .025, h * .4, (0, -d / 2 - .012, h * .3)))]


def laptop(rng):
    w, d = U(rng, .3, .36), U(rng, .21, .25)
    ang = U(rng, .3, .6)
    screen = box(w, .008, d, (0, 0, d / 2))
    screen.rotate(screen.get_rotation_matrix_from_xyz((-ang, 0, 0)), center=(0, 0, 0))
    screen.translate((0, d / 2, .018))
    return [("keyboard", box(w, d, .018, (0, 0, .009))), ("screen", screen),
            ("touchpad", box(w * .3, d * .25, .004, (0, -d * .32, .02))), ("hinge", cyl(.006, w * .8, (0, d / 2, .018), (1, 0, 0)))]


def headphones(rng):
    r = U(rng, .08, .1)
    band = ring(r, .008, (0, 0, .04), (1, 0, 0), keep=lambda v: v[:, 2] > 0 if False else v[:, 1] > -1)
    band = ring(r, .008, (0, 0, 0), (1, 0, 0), keep=lambda v: v[:, 1] > 0)
    band.translate((0, 0, .05))
    return [("headband", band), ("earcup", cyl(.04, .03, (0, -r, .05), (0, 1, 0))),
            ("earcup", cyl(.04, .03, (0, r, .05), (0, 1, 0))),
            ("cushion", ring(.03, .008, (0, -r + .02, .05), (0, 1, 0))), ("cushion", ring(.03, .008, (0, r - .02, .05), (0, 1, 0)))]


def watering_can(rng):
    r, h = U(rng, .07, .09), U(rng, .15, .2)
    return [("body", cyl(r, h, (0, 0, h / 2))), ("spout", cyl(.01, .2, (r + .07, 0, h * .6), (1, 0, 1))),
            ("rose", cyl(.022, .015, (r + .145, 0, h * .6 + .075), (1, 0, 1))),
            ("handle", ring(r * .8, .01, (-.01, 0, h), (0, 1, 0), keep=lambda v: v[:, 2] > 0))]


def dumbbell(rng):
    hl = U(rng, .1, .14)
    r = U(rng, .04, .055)
    return [("handle", cyl(.014, hl, (0, 0, r), (1, 0, 0))),
            ("collar", cyl(.022, .012, (-hl / 2 + .006, 0, r), (1, 0, 0))), ("collar", cyl(.022, .012, (hl / 2 - .006, 0, r), (1, 0, 0))),
            ("weight", cyl(r, .04, (-(hl / 2 + .02), 0, r), (1, 0, 0))), ("weight", cyl(r, .04, (hl / 2 + .02, 0, r), (1, 0, 0)))]


def kettlebell(rng):
    r = U(rng, .06, .09)
    return [("body", sphere(r, (0, 0, r), 20)), ("base", cyl(r * .6, .01, (0, 0, .005))),
            ("handle", ring(r * .55, .013, (0, 0, 2 * r), (0, 1, 0), keep=lambda v: v[:, 2] > -r * .2))]


def umbrella(rng):
    sl = U(rng, .6, .8)
    return [("canopy", cone(U(rng, .4, .5), .2, (0, 0, sl), res=8)), ("shaft", cyl(.007, sl, (0, 0, sl / 2))),
            ("tip", cone(.008, .05, (0, 0, sl + .19))),
            ("handle", ring(.04, .012, (.04, 0, 0), (0, 1, 0), keep=lambda v: v[:, 2] < .005))]


def computer_mouse(rng):
    body = sphere(.03, (0, 0, .0))
    body.scale(1.0, center=(0, 0, 0))
    v = np.asarray(body.vertices)
    v *= [1.0, 1.8, .7]
    body.vertices = _o3d().utility.Vector3dVector(v + [0, 0, .015])
    return [("body", body), ("button", box(.025, .03, .006, (-.014, .03, .033))), ("button", box(.025, .03, .006, (.014, .03, .033))),
            ("wheel", cyl(.006, .005, (0, .03, .037), (1, 0, 0))), ("cable", cyl(.002, .08, (0, .095, .01), (0, 1, 0)))]


def microwave(rng):
    w, d, h = U(rng, .45, .55), U(rng, .35, .42), U(rng, .26, .32)
    return [("body", box(w, d, h, (0, 0, h / 2))), ("door", box(w * .72, .015, h * .9, (-w * .13, -d / 2 - .008, h / 2))),
            ("window", box(w * .5, .005, h * .6, (-w * .13, -d / 2 - .018, h / 2))),
            ("control panel", box(w * .22, .012, h * .9, (w * .37, -d / 2 - .006, h / 2))),
            ("handle", box(.02, .03, h * .6, (w * .21, -d / 2 - .03, h / 2)))]


def refrigerator(rng):
    w, d, h = U(rng, .6, .75), U(rng, .6, .7), U(rng, 1.6, 1.9)
    return [("body", box(w, d, h, (0, 0, h / 2))), ("freezer door", box(w, .03, h * .3, (0, -d / 2 - .015, h * .84))),
            ("door", box(w, .03, h * .66, (0, -d / 2 - .015, h * .34))),
            ("handle", box(.025, .04, h * .25, (w * .4, -d / 2 - .05, h * .5))),
            ("handle", box(.025, .04, h * .15, (w * .4, -d / 2 - .05, h * .82)))]


def suitcase(rng):
    w, d, h = U(rng, .35, .45), U(rng, .2, .26), U(rng, .5, .65)
    return [("body", box(w, d, h, (0, 0, h / 2 + .03))),
            ("telescoping handle", box(w * .6, .02, .3, (0, d / 2 - .02, h + .18))),
            ("carry handle", box(w * .35, .025, .02, (0, 0, h + .04))),
            ("wheel", cyl(.03, .02, (-w / 2 + .04, d / 2 - .04, .03), (1, 0, 0))),
            ("wheel", cyl(.03, .02, (w / 2 - .04, d / 2 - .04, .03), (1, 0, 0)))]


def fan(rng):
    ph = U(rng, .3, .5)
    blades = []
    for a in np.linspace(0, 2 * np.pi, 4)[:3]:
        b = box(.12, .04, .004, (.07, 0, 0))
        b.rotate(b.get_rotation_matrix_from_xyz((0, 0, a)), center=(0, 0, 0))
        b.rotate(b.get_rotation_matrix_from_xyz((np.pi / 2, 0, 0)), center=(0, 0, 0))
        blades.append(("fan blade", b.translate((0, -.03, ph + .15))))
    return [("base", cyl(.1, .03, (0, 0, .015))), ("pole", cyl(.012, ph, (0, 0, ph / 2 + .03))),
            ("motor housing", sphere(.045, (0, .03, ph + .15))), ("hub", cyl(.025, .03, (0, -.03, ph + .15), (0, 1, 0))),
            ("guard", ring(.18, .004, (0, -.05, ph + .15), (0, 1, 0)))] + blades


def vase(rng):
    r, h = U(rng, .05, .08), U(rng, .18, .3)
    return [("body", sphere(r * 1.4, (0, 0, h * .35), 20)), ("neck", cyl(r * .5, h * .35, (0, 0, h * .7))),
            ("rim", ring(r * .55, .006, (0, 0, h * .875), (0, 0, 1)))]


def plant_pot(rng):
    r, h = U(rng, .07, .1), U(rng, .08, .12)
    leaves = [("foliage", sphere(U(rng, .04, .07), (U(rng, -.04, .04), U(rng, -.04, .04), h + U(rng, .06, .12)), 10)) for _ in range(3)]
    return [("planter", shell(r, h)), ("soil", cyl(r * .95, .01, (0, 0, h * .85))), ("saucer", cyl(r * 1.2, .012, (0, 0, .006)))] + leaves


def candle(rng):
    r, h = U(rng, .025, .04), U(rng, .06, .15)
    return [("wax", cyl(r, h, (0, 0, h / 2))), ("wick", cyl(.0015, .012, (0, 0, h + .006))),
            ("holder", cyl(r * 1.6, .012, (0, 0, .006)))]


def clock(rng):
    r = U(rng, .1, .15)
    return [("frame", ring(r, .012, (0, 0, r + .02), (0, 1, 0))), ("dial", cyl(r, .008, (0, .004, r + .02), (0, 1, 0))),
            ("clock hand", box(.005, .004, r * .7, (0, -.004, r + .02 + r * .35))),
            ("clock hand", box(r * .5, .004, .006, (r * .25, -.006, r + .02))), ("stand", box(r, .06, .02, (0, 0, .01)))]


def backpack(rng):
    w, d, h = U(rng, .28, .34), U(rng, .14, .2), U(rng, .38, .48)
    return [("body", box(w, d, h, (0, 0, h / 2))), ("front pocket", box(w * .7, .05, h * .35, (0, -d / 2 - .025, h * .3))),
            ("shoulder strap", box(.05, .02, h * .8, (-w * .25, d / 2 + .01, h * .5))),
            ("shoulder strap", box(.05, .02, h * .8, (w * .25, d / 2 + .01, h * .5))),
            ("top handle", ring(.04, .006, (0, 0, h), (0, 1, 0), keep=lambda v: v[:, 2] > 0))]


def helmet(rng):
    r = U(rng, .11, .14)
    return [("shell", hemisphere(r, (0, 0, 0), upward=False).translate((0, 0, .02))),
            ("visor", box(r * 1.4, .06, .006, (0, -r * .9, .025))), ("chin strap", ring(r * .8, .004, (0, 0, .02), (1, 0, 0),
                                                                                          keep=lambda v: v[:, 1] < 0))]


def phone(rng):
    w, h = U(rng, .065, .08), U(rng, .14, .17)
    return [("body", box(w, h, .008, (0, 0, .004))), ("screen", box(w * .92, h * .9, .001, (0, 0, .0085))),
            ("camera", cyl(.006, .002, (-w * .3, h * .4, -.001))), ("side button", box(.002, .015, .003, (w / 2 + .001, h * .2, .004)))]


def stapler(rng):
    L = U(rng, .14, .18)
    return [("base", box(L, .04, .012, (0, 0, .006))), ("arm", box(L * .92, .035, .02, (-.005, 0, .035))),
            ("hinge", cyl(.008, .045, (-L / 2 + .01, 0, .022), (0, 1, 0))), ("anvil", box(.02, .02, .004, (L / 2 - .015, 0, .014)))]


def power_drill(rng):
    """A cordless drill: motor body and chuck on top, pistol grip with trigger, battery below.
    Stands on its battery or lies on its side (as drills are put down)."""
    length, r = U(rng, .15, .21), U(rng, .024, .032)
    grip_h, bat_h = U(rng, .08, .11), U(rng, .035, .06)
    x_grip = U(rng, -.01, .03)
    z_axis = bat_h + grip_h + r * .8
    parts = [("battery", box(U(rng, .07, .1), U(rng, .06, .08), bat_h, (x_grip, 0, bat_h / 2))),
             ("handle", box(U(rng, .03, .04), U(rng, .026, .034), grip_h + r, (x_grip, 0, bat_h + (grip_h + r) / 2))),
             ("body", cyl(r, length, (x_grip - length * .15, 0, z_axis), (1, 0, 0))),
             ("chuck", cone(r * .75, U(rng, .035, .05), (x_grip - length * .65, 0, z_axis), (-1, 0, 0))),
             ("trigger", box(.01, .012, .022, (x_grip - .022, 0, bat_h + grip_h - .01)))]
    if rng.random() < .5:  # lying on its side
        rot = _o3d().geometry.TriangleMesh.get_rotation_matrix_from_xyz((np.pi / 2, 0, 0))
        for _, m in parts:
            m.rotate(rot, center=(0, 0, 0))
        low = min(np.asarray(m.vertices)[:, 2].min() for _, m in parts)
        for _, m in parts:
            m.translate((0, 0, -low))
    return parts


def canister(rng):
    """Coffee tins, chips cans, food canisters: a cylinder with a lid that overhangs a little,
    sits flush, or is a tall screw lid."""
    r, h = U(rng, .035, .07), U(rng, .09, .25)
    lid_h = U(rng, .008, .03)
    lid_r = r * U(rng, 1.0, 1.06)
    body = cyl(r, h, (0, 0, h / 2))
    parts = [("body", body), ("lid", cyl(lid_r, lid_h, (0, 0, h + lid_h / 2)))]
    if rng.random() < .3:
        parts.append(("knob", cyl(r * .25, .012, (0, 0, h + lid_h + .006))))
    return parts


CATEGORY_GENERATORS = {
    "mug": mug, "cup": cup, "kettle": kettle, "teapot": teapot, "pitcher": pitcher, "pot": pot, "pan": pan,
    "saucepan": saucepan, "bottle": bottle, "jug": jug, "jar": jar, "bucket": bucket, "bowl": bowl,
    "wine glass": wine_glass, "knife": knife, "spatula": spatula, "ladle": ladle, "spoon": spoon,
    "cutting board": cutting_board, "hammer": hammer, "screwdriver": screwdriver, "scissors": scissors,
    "wrench": wrench, "pliers": pliers, "flashlight": flashlight, "spray bottle": spray_bottle,
    "toothbrush": toothbrush, "chair": chair, "stool": stool, "table": table, "lamp": lamp, "cabinet": cabinet,
    "drawer": drawer, "door": door, "faucet": faucet, "shelf": shelf, "trash can": trash_can,
    "box": box_with_lid, "bag": bag, "laptop": laptop, "headphones": headphones, "watering can": watering_can,
    "dumbbell": dumbbell, "kettlebell": kettlebell, "umbrella": umbrella, "computer mouse": computer_mouse,
    "microwave": microwave, "refrigerator": refrigerator, "suitcase": suitcase, "fan": fan, "vase": vase,
    "plant pot": plant_pot, "candle": candle, "clock": clock, "backpack": backpack, "helmet": helmet, "phone": phone,
    "stapler": stapler, "power drill": power_drill, "canister": canister,
}

# Canonical part name -> synonyms a user may type (training samples one at random per shape).
PART_SYNONYMS = {
    "body": ["body", "container", "main body", "housing"], "handle": ["handle", "grip", "grab handle", "holder"],
    "spout": ["spout", "nozzle spout", "pouring spout", "lip"], "lid": ["lid", "cover", "top cover", "cap lid"],
    "knob": ["knob", "lid knob", "finial", "top knob"], "base": ["base", "bottom", "foot", "stand"],
    "neck": ["neck", "bottle neck", "throat", "shoulder"], "cap": ["cap", "bottle cap", "screw cap", "closure"],
    "bowl": ["bowl", "cup part", "scoop", "basin"], "stem": ["stem", "glass stem", "stalk", "column"],
    "blade": ["blade", "cutting edge", "knife blade", "edge"], "head": ["head", "striking head", "top end", "working end"],
    "shaft": ["shaft", "rod", "shank", "bar"], "tip": ["tip", "point", "bit", "end point"],
    "jaw": ["jaw", "jaws", "mouth", "gripping jaw"], "pivot": ["pivot", "hinge pin", "joint", "rivet"],
    "button": ["button", "switch", "push button", "key"], "trigger": ["trigger", "lever", "squeeze trigger", "pull trigger"],
    "nozzle": ["nozzle", "sprayer", "spray head", "outlet"], "bristles": ["bristles", "brush", "brush head", "tufts"],
    "leg": ["leg", "chair leg", "support", "foot post"], "seat": ["seat", "sitting surface", "seat surface", "saddle"],
    "back": ["back", "backrest", "back rest", "chair back"], "arm": ["arm", "armrest", "arm rest", "side rest"],
    "footrest": ["footrest", "foot ring", "foot rail", "step ring"], "top": ["top", "tabletop", "table top", "surface"],
    "drawer": ["drawer", "table drawer", "pull-out drawer", "slide drawer"], "pole": ["pole", "lamp pole", "stand rod", "column pole"],
    "shade": ["shade", "lampshade", "lamp shade", "diffuser"], "door": ["door", "cabinet door", "front door panel", "flap"],
    "front": ["front", "drawer front", "front panel", "face"], "panel": ["panel", "door panel", "leaf", "slab"],
    "hinge": ["hinge", "door hinge", "pivot hinge", "hinge plate"], "side": ["side", "side panel", "upright", "side wall"],
    "shelf": ["shelf", "board", "shelf board", "tier"], "pedal": ["pedal", "foot pedal", "step pedal", "treadle"],
    "keyboard": ["keyboard", "keys", "base deck", "typing surface"], "screen": ["screen", "display", "monitor", "lid screen"],
    "headband": ["headband", "head band", "band", "arch"], "earcup": ["earcup", "ear cup", "earpiece", "ear pad"],
    "weight": ["weight", "plate", "weight plate", "bell end"], "canopy": ["canopy", "umbrella canopy", "cover cloth", "top canopy"],
    "wheel": ["wheel", "scroll wheel", "roller", "caster"], "board": ["board", "chopping surface", "cutting surface", "plank"],
    "rim": ["rim", "lip", "brim", "edge ring"], "label": ["label", "sticker", "wrapper", "printed label"],
    "bolster": ["bolster", "guard", "finger guard", "collar of the knife"], "face": ["face", "striking face", "hammer face", "poll"],
    "claw": ["claw", "nail puller", "claw end", "split claw"], "touchpad": ["touchpad", "trackpad", "touch pad", "mouse pad"],
    "bulb": ["bulb", "light bulb", "lamp bulb", "light"], "switch": ["switch", "power switch", "on off switch", "toggle"],
    "lens": ["lens", "glass lens", "front lens", "light window"], "apron": ["apron", "skirt", "table apron", "rail"],
    "stretcher": ["stretcher", "crossbar", "leg brace", "rung"], "lock": ["lock", "keyhole", "door lock", "deadbolt"],
    "aerator": ["aerator", "faucet tip", "spout tip", "mouthpiece"], "zipper": ["zipper", "zip", "zip fastener", "closure zip"],
    "pocket": ["pocket", "side pocket", "pouch", "compartment"], "rivet": ["rivet", "rivets", "fastener", "stud"],
    "collar": ["collar", "weight collar", "clip collar", "lock ring"], "cushion": ["cushion", "ear cushion", "padding", "pad"],
    "rose": ["rose", "sprinkler head", "sprinkler", "spray rose"], "cable": ["cable", "cord", "wire", "lead"],
    "back panel": ["back panel", "backboard", "rear panel", "back board"], "hook": ["hook", "hanging hook", "hanger", "loop"],
    "window": ["window", "glass window", "viewing window", "door glass"],
    "control panel": ["control panel", "controls", "keypad", "button panel"],
    "freezer door": ["freezer door", "freezer", "top door", "freezer compartment"],
    "telescoping handle": ["telescoping handle", "pull handle", "trolley handle", "extendable handle"],
    "carry handle": ["carry handle", "top grip", "carrying handle", "lift handle"],
    "fan blade": ["fan blade", "propeller", "vane", "impeller blade"], "motor housing": ["motor housing", "motor", "motor casing", "engine cover"],
    "hub": ["hub", "center cap", "spinner", "blade hub"], "guard": ["guard", "fan guard", "grille", "cage"],
    "planter": ["planter", "flower pot", "plant container", "pot"], "soil": ["soil", "dirt", "earth", "potting soil"],
    "saucer": ["saucer", "drip tray", "plate under the pot", "tray"], "foliage": ["foliage", "leaves", "plant", "greenery"],
    "wax": ["wax", "candle body", "wax column", "candle wax"], "wick": ["wick", "candle wick", "string", "flame end"],
    "holder": ["holder", "candle holder", "candlestick", "dish"], "frame": ["frame", "bezel", "outer ring", "casing ring"],
    "dial": ["dial", "clock face", "watch face", "face plate"], "clock hand": ["clock hand", "hand", "pointer", "needle"],
    "stand": ["stand", "support stand", "feet", "pedestal"], "front pocket": ["front pocket", "outer pocket", "pouch pocket", "front pouch"],
    "shoulder strap": ["shoulder strap", "strap", "backpack strap", "harness"], "top handle": ["top handle", "grab loop", "haul loop", "carry loop"],
    "shell": ["shell", "helmet shell", "outer shell", "dome"], "visor": ["visor", "peak", "sun visor", "brim visor"],
    "chin strap": ["chin strap", "strap under the chin", "buckle strap", "chinstrap"],
    "camera": ["camera", "camera lens", "rear camera", "lens bump"], "side button": ["side button", "volume button", "power button", "side key"],
    "anvil": ["anvil", "staple anvil", "crimp plate", "clincher"],
    "battery": ["battery", "battery pack", "power pack", "accumulator"],
    "chuck": ["chuck", "drill chuck", "bit holder", "collet"],
}

# Held out for open-vocabulary evaluation: never seen in training, nor are the part names that
# only they have (stem, bristles, canopy, pedal, earcup, headband).
UNSEEN_CATEGORIES = ["wine glass", "toothbrush", "umbrella", "trash can", "headphones", "watering can", "pitcher"]
SEEN_CATEGORIES = [c for c in CATEGORY_GENERATORS if c not in UNSEEN_CATEGORIES]


def make_shape(category: str, rng: np.random.Generator) -> LabeledMesh:
    if category not in CATEGORY_GENERATORS:
        raise KeyError(f"unknown category {category!r}")
    return LabeledMesh(category, CATEGORY_GENERATORS[category](rng))


def seen_vocabulary() -> set:
    """Every name (canonical and synonym, cleaned) that training on the seen categories uses."""
    from ..text.prompts import clean_label

    seen = {p for c in SEEN_CATEGORIES for p, _ in CATEGORY_GENERATORS[c](np.random.default_rng(0))}
    return {clean_label(name) for p in seen for name in PART_SYNONYMS.get(p, [p])}


def unseen_part_names() -> list:
    """Part names of the held-out categories that training never saw, under any of their
    synonyms (a name whose synonym is used for a seen part is not held out)."""
    from ..text.prompts import clean_label

    vocab = seen_vocabulary()
    unseen = {p for c in UNSEEN_CATEGORIES for p, _ in CATEGORY_GENERATORS[c](np.random.default_rng(0))}
    return sorted(p for p in unseen
                  if not any(clean_label(name) in vocab for name in PART_SYNONYMS.get(p, [p])))


_NAME_STOPWORDS = {"a", "an", "the", "of", "under", "on", "off"}


@functools.lru_cache(maxsize=4096)  # asked for every query and competitor of every frame
def related_words(name: str) -> frozenset:
    """The words of ``name`` and of every synonym of every part it names ("grip" -> the handle's
    names: handle, grip, grab, holder). Two names sharing a word may mean the same part."""
    from ..text.prompts import clean_label

    name = clean_label(name)
    names = {name}
    meant = clean_label(QUERY_ALIASES.get(name, name))
    for part, synonyms in PART_SYNONYMS.items():
        cleaned = {clean_label(s) for s in synonyms} | {clean_label(part)}
        if meant in cleaned:
            names |= cleaned
    return frozenset({w for n in names for w in n.split()} - _NAME_STOPWORDS)


def synonym_group(name: str) -> list:
    """``name`` and the other names of the one part it names (for a prompt ensemble over
    synonyms: "grip" -> grip, handle, grab handle, holder); just ``name`` when it names no part
    or more than one ("lip": a spout's or a rim's)."""
    return list(_synonym_group(name))


# Parts that training keeps apart (a canister's lid, a bottle's cap) but that users name either
# way: on the real captures "lid" on the mustard cap and "cap" on every tin lid scored IoU 0.00,
# each word 0.6-0.9 on its own kind (`evaluate-parts --words`). A query for one of them scores each
# patch by the best of the family's parts (averaging their embeddings instead cost tin lids
# 0.84 -> 0.52 on the tune split).
QUERY_FAMILIES = (("lid", "cap"),)
# Words users say for a part that are none of the names training drew for it: such a query is
# scored exactly as the part's own names are. Measured (`evaluate-parts --words`, release 4,
# object mode): "top" on the 30 held-out upright tins' lids 0.000 (0 found), "lid" 0.785.
QUERY_ALIASES = {"top": "lid"}


def family_groups(name: str) -> list:
    """The synonym groups a query is scored by: its own (``synonym_group``), then one per other
    part of its ``QUERY_FAMILIES`` ("lid" -> [lid, cover, ...], [cap, bottle cap, ...])."""
    return [list(g) for g in _family_groups(name)]


@functools.lru_cache(maxsize=4096)  # asked for every query of every frame (and its threshold)
def _family_groups(name: str) -> tuple:
    owners = _owners(name)
    family = next((f for f in QUERY_FAMILIES if len(owners) == 1 and owners[0] in f), ())
    return (tuple(synonym_group(name)),) + tuple(tuple(PART_SYNONYMS[part]) for part in family if part != owners[0])


def _owners(name: str) -> list:
    """The canonical parts ``name`` is a name of (cleaned; usually one, "lip" two, none)."""
    from ..text.prompts import clean_label

    cleaned = clean_label(name)
    if cleaned in QUERY_ALIASES:
        return [QUERY_ALIASES[cleaned]]
    return [part for part, synonyms in PART_SYNONYMS.items()
            if cleaned == clean_label(part) or cleaned in {clean_label(s) for s in synonyms}]


@functools.lru_cache(maxsize=4096)
def _synonym_group(name: str) -> tuple:
    from ..text.prompts import clean_label

    cleaned = clean_label(name)
    owners = _owners(name)
    if len(owners) != 1:
        return (name,)
    if cleaned in QUERY_ALIASES:  # the part's own names, not the alias's embedding
        return tuple(PART_SYNONYMS[owners[0]])
    others = [s for s in PART_SYNONYMS[owners[0]] if clean_label(s) != cleaned]
    return tuple([name] + others)

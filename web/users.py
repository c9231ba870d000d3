"""Console users (admins only): add with a generated password shown once, disable, reset a password, change a
role. Disabling, a new password and a new role end every session of that user (badge_bridge.people).
Wall displays (web.wall) are added here with a one-time link shown once, and revoked."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from badge_bridge import people as admin
from badge_bridge.models import ConsoleUser
from web.auth import role_required
from web.changes import admin_change, form_errors, read

bp = Blueprint("users", __name__, url_prefix="/users")


class UserForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(min=2, max=64)])
    role = SelectField("Role", choices=[SelectChoice(r) for r in admin.LOGIN_ROLES])


class ActionForm(FlaskForm):
    pass


class WallForm(FlaskForm):
    name = StringField("Name of the screen", validators=[DataRequired(), Length(min=2, max=64)])


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=[SelectChoice(r) for r in admin.LOGIN_ROLES])


@bp.route("")
@role_required("admin")
def index() -> Any:
    everyone = read(lambda s: list(s.scalars(select(ConsoleUser).order_by(ConsoleUser.username))))
    users = [u for u in everyone if u.role != "wall"]
    walls = [u for u in everyone if u.role == "wall"]
    return render_template("users.html", users=users, walls=walls, form=UserForm(), wall_form=WallForm(),
                           action=ActionForm(), role_form=RoleForm(), roles=admin.LOGIN_ROLES)


@bp.route("", methods=["POST"])
@role_required("admin")
def add() -> Any:
    form = UserForm()
    if form.validate_on_submit():
        password = secrets.token_urlsafe(15)
        if admin_change(admin.add_user, form.username.data, form.role.data, password,
                        done=f"User {form.username.data} added.") is not None:
            flash(f"Password for {form.username.data}, shown once: {password}", "secret")
    else:
        form_errors(form)
    return redirect(url_for("users.index"))


@bp.route("/<id:user_id>/<any(enable, disable):action>", methods=["POST"])
@role_required("admin")
def toggle(user_id: int, action: str) -> Any:
    if ActionForm().validate_on_submit():
        if action == "disable" and str(user_id) == current_user.id:
            flash("You cannot disable yourself.", "error")
        else:
            admin_change(admin.set_user_active, user_id, action == "enable",
                         done="User enabled." if action == "enable" else "User disabled. Their sessions have ended.")
    return redirect(url_for("users.index"))


@bp.route("/<id:user_id>/password", methods=["POST"])
@role_required("admin")
def reset(user_id: int) -> Any:
    if ActionForm().validate_on_submit():
        password = secrets.token_urlsafe(15)
        user = admin_change(admin.reset_password, user_id, password, done="Password reset. Their sessions have ended.")
        if user is not None:
            flash(f"New password for {user.username}, shown once: {password}", "secret")
    return redirect(url_for("users.index"))


@bp.route("/<id:user_id>/role", methods=["POST"])
@role_required("admin")
def role(user_id: int) -> Any:
    form = RoleForm()
    if form.validate_on_submit():
        if str(user_id) == current_user.id:
            flash("You cannot change your own role.", "error")
        else:
            admin_change(admin.set_role, user_id, form.role.data, done="Role changed. Their sessions have ended.")
    else:
        form_errors(form)
    return redirect(url_for("users.index"))


@bp.route("/walls", methods=["POST"])
@role_required("admin")
def add_wall() -> Any:
    """A wall display and its one-time link, shown once (the token only in the link's fragment: web.wall)."""
    form = WallForm()
    if form.validate_on_submit():
        name = form.name.data or ""
        added = admin_change(admin.add_wall, name, now=datetime.now(UTC), done="Wall display added.")
        if added is not None:
            wall, token = added
            flash(f"Link for {wall.username}, shown once; open it on the wall screen within 24 hours: "
                  f"{request.host_url}wall/connect#{token}", "secret")
    else:
        form_errors(form)
    return redirect(url_for("users.index"))


@bp.route("/<id:user_id>/revoke", methods=["POST"])
@role_required("admin")
def revoke_wall(user_id: int) -> Any:
    if ActionForm().validate_on_submit():
        admin_change(admin.revoke_wall, user_id, done="Wall display revoked. Its screen closes within seconds.")
    return redirect(url_for("users.index"))

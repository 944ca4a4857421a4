% rebase("base.tpl", title=title)
% def error_for(name):
%   return f' aria-invalid="true" aria-describedby="{name}-error"' if name in errors else ""
% end
<h1>{{heading}}</h1>
% if notice:
<p class="error" id="{{notice}}" role="alert">{{notices[notice]}}</p>
% end
<form method="post" action="/">
  <input type="hidden" name="token" value="{{token}}">
  <p>
    <label for="age">Age</label>
    <input type="text" id="age" name="age" value="{{values['age']}}" inputmode="numeric" autocomplete="off"{{!error_for("age")}}>
    % if "age" in errors:
    <span class="error" id="age-error">{{errors["age"]}}</span>
    % end
  </p>
  <fieldset{{!' aria-describedby="hobbies-error"' if "hobbies" in errors else ""}}>
    <legend>Hobbies</legend>
    % if "hobbies" in errors:
    <p class="error" id="hobbies-error">{{errors["hobbies"]}}</p>
    % end
    % for value, label in hobbies.items():
    <label><input type="checkbox" name="hobbies" value="{{value}}" {{"checked" if value in values["hobbies"] else ""}}> {{label}}</label>
    % end
  </fieldset>
  <p class="trap" aria-hidden="true"><label for="{{trap}}">Leave this empty</label> <input type="text" id="{{trap}}" name="{{trap}}" tabindex="-1" autocomplete="off"></p>
  <p><button type="submit">Submit</button></p>
</form>

% # One chart: its bars drawn as inline SVG, hidden from screen readers, which read the table under
% # it instead (hidden from sight): the same figures. Each bar is a percentage of the largest.
% # rows: (label, count, *more cells); columns: upright bars along an ordered axis (bins, days),
% # else a bar a line, its label before it. Lengths in % of the page's width, so that the text
% # keeps its size on a phone.
% largest = max([count for _, count, *_ in rows] + [1])
% if columns:
%   slot = 100 / len(rows)
%   step = -(-len(rows) // 4)  # at most four labels under the axis, room for each on a phone
<svg class="chart" width="100%" height="148" aria-hidden="true">
  % for i, (label, count, *_) in enumerate(rows):
  %   height = round(count / largest * 100, 1)
  <rect x="{{round((i + 0.1) * slot, 2)}}%" y="{{120 - height}}" width="{{round(0.8 * slot, 2)}}%" height="{{height}}"/>
  %   if count and len(rows) <= 16:
  <text x="{{round((i + 0.5) * slot, 2)}}%" y="{{114 - height}}" text-anchor="middle">{{count}}</text>
  %   end
  %   if i % step == 0 and i * slot <= 80:
  <text x="{{round(i * slot, 2)}}%" y="142">{{label}}</text>
  %   end
  % end
  <line x1="0" y1="120.5" x2="100%" y2="120.5"/>
</svg>
% else:
<svg class="chart" width="100%" height="{{len(rows) * 28}}" aria-hidden="true">
  % for i, (label, count, *more) in enumerate(rows):
  %   width = round(count / largest * 40, 2)
  <text x="0" y="{{i * 28 + 19}}">{{label if len(label) <= 14 else label[:13] + "…"}}</text>
  <rect x="34%" y="{{i * 28 + 5}}" width="{{width}}%" height="18"/>
  <text x="{{34 + width}}%" dx="6" y="{{i * 28 + 19}}">{{" · ".join(str(cell) for cell in (count, *more))}}</text>
  % end
</svg>
% end
<div class="visually-hidden">
<table>
  <caption>{{caption}}</caption>
  <thead>
    <tr>
    % for heading in head:
      <th scope="col">{{heading}}</th>
    % end
    </tr>
  </thead>
  <tbody>
  % for label, *cells in rows:
    <tr>
      <th scope="row">{{label}}</th>
      % for cell in cells:
      <td>{{cell}}</td>
      % end
    </tr>
  % end
  </tbody>
</table>
</div>
